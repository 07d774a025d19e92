"""Two CPU processes (torchrun, gloo) train like one process on the combined batch.

The ranks must end with identical weights (gradients are all-reduced by MMEngine's
per-child DDP wrapper, no hand-written sync), and those weights must equal a
single process trained on all four samples, up to float reordering.
"""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

import ddp_worker

HERE = osp.dirname(osp.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason='torch.distributed with gloo is required')
def test_two_ranks_equal_one_process_on_the_combined_batch(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ddp_worker.ROOT)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
           '--master_addr=127.0.0.1', f'--master_port={_free_port()}',
           osp.join(HERE, 'ddp_worker.py'), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / 'rank0.pt', map_location='cpu')
    r1 = torch.load(tmp_path / 'rank1.pt', map_location='cpu')
    # The trainable children really ran under DDP.
    assert r0['wrapper'] == 'MMSeparateDistributedDataParallel'
    assert r0['children']['generator'] == 'MMDistributedDataParallel'
    assert r0['children']['aux_diffusion'] == 'MMDistributedDataParallel'

    torch.set_num_threads(1)
    ddp_worker.patch_randomness()
    cfg = ddp_worker.load_tiny_cfg()
    model = ddp_worker.build_model(cfg)
    init = ddp_worker.trainable_state(model)
    from mmengine.optim import build_optim_wrapper
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = ddp_worker.make_batch(list(range(ddp_worker.GLOBAL_BATCH)))
    model.train()
    for _ in range(ddp_worker.NUM_STEPS):
        model.train_step(batch, optim)
    single = ddp_worker.trainable_state(model)

    assert set(r0['state']) == set(single) and len(single) > 0
    moved = 0
    for key, ref in single.items():
        a, b = r0['state'][key], r1['state'][key]
        assert torch.equal(a, b), f'ranks differ at {key}'
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6, msg=lambda m: f'{key}: {m}')
        moved += int(not torch.equal(ref, init[key]))
    # Both LoRA sets were trained (a vacuous comparison of untouched weights would pass).
    assert any(k.startswith('generator.') and not torch.equal(single[k], init[k]) for k in single)
    assert any(k.startswith('aux_diffusion.') and not torch.equal(single[k], init[k])
               for k in single)
