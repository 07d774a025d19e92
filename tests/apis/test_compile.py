"""torch.compile of the inference path (UNet, VAE encoder and decoder) keeps the output.

The compiled path is the device suite's (``tools/benchmarks/gpu_cases.py``):

* graph capture with ``fullgraph=True`` (backend ``eager``): the role-switched LoRA
  hooks and diffusers' blocks trace into one graph per network, with no graph
  break, and the output is bit-identical;
* CPU inductor (mode ``default``): same output within 1e-4 on the [0, 1] image
  (measured: 3.6e-6). Compiling the tiny path's C++ kernels takes about 7
  minutes on 2 busy cores, so this test runs only with ``ICMSR_TEST_INDUCTOR=1``.
"""
import os
import os.path as osp
import shutil
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'benchmarks'))
import gpu_cases  # noqa: E402


def _outputs(**compile_kwargs):
    from apis_helpers import randomize_lora

    from icmsr.apis import TileSettings, fuse_generator_lora, init_model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = init_model(gpu_cases.model_config('tiny'), None, fuse=False, allow_untrained=True)
        randomize_lora(model.generator)  # non-zero LoRA, folded into the weights
        fuse_generator_lora(model.generator)
        tiles = TileSettings(128, 64, 128, 64)

        def run(lq, prompt):
            return model.super_resolve(lq, [prompt], tiles=tiles)
        lq = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        eager = run(lq, 'a photo')
        torch._dynamo.reset()
        gpu_cases.compile_generator(model.generator, **compile_kwargs)
        compiled = run(lq, 'a photo')
        assert type(model.generator.unet).__name__ == 'OptimizedModule'
        return eager, compiled
    finally:
        torch.set_num_threads(threads)


def test_inference_path_captures_whole_graphs_and_keeps_the_output():
    eager, compiled = _outputs(backend='eager', fullgraph=True)
    assert eager.shape == (1, 3, 128, 128)
    assert torch.equal(compiled, eager)


def _cxx_compiler():
    candidates = (os.environ.get('CXX'), 'g++', 'c++', 'clang++')
    return next((c for c in candidates if c and shutil.which(c)), None)


@pytest.mark.skipif(_cxx_compiler() is None,
                    reason='CPU inductor generates C++ kernels and no C++ compiler (g++/clang++) '
                           'is on PATH')
@pytest.mark.skipif(os.environ.get('ICMSR_TEST_INDUCTOR') != '1',
                    reason='CPU inductor compiles the tiny path in ~7 min on 2 cores (2 min with '
                           'a warm cache); set ICMSR_TEST_INDUCTOR=1 to run it')
def test_inductor_compiled_path_matches_eager():
    eager, compiled = _outputs(backend='inductor', mode='default')
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)
