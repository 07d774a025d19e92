"""The measurements of tools/benchmarks/gpu_suite.py: model building and one function per case kind.

Each ``case_*`` function runs in the worker process that ``gpu_suite.py`` starts for
one case and returns a JSON-serialisable dict of figures. Peak memory is
``torch.cuda.max_memory_allocated``/``max_memory_reserved`` on CUDA and the peak
resident size on the CPU; times are medians after warm-up, with the device
synchronised around every timed call.
"""
import argparse
import os
import os.path as osp
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CONFIG = osp.join(ROOT, 'configs', 'icmsr_tiny.py')
GiB = 2 ** 30


# ----------------------------------------------------------------------------- models
def _walk(node: Any, fn: Callable[[Dict[str, Any]], None]) -> None:
    """Apply ``fn`` to every dict inside a config tree (lists included)."""
    if isinstance(node, dict):
        fn(node)
        for value in node.values():
            _walk(value, fn)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, fn)


def model_config(arch: str, frozen_dtype: Optional[str] = None,
                 **overrides: Any) -> Dict[str, Any]:
    """The ICM-SR model of ``configs/icmsr_tiny.py``, in the tiny or the SD v1-4 architecture.

    Args:
        arch: ``'tiny'`` or ``'sd14'`` (random weights either way).
        frozen_dtype: ``torch_dtype`` of every frozen SD component (None: float32).
        **overrides: Top-level model keys to update (dicts are merged one level deep).

    Returns:
        A model config dict for ``MODELS.build`` / ``init_model``.
    """
    from bench_models import bench_model_config
    os.environ.setdefault('ICMSR_TINY_DATA', osp.join(tempfile.gettempdir(), 'icmsr_tiny_data'))
    model = bench_model_config(arch)

    def adjust(node: Dict[str, Any]) -> None:
        if arch == 'sd14' and node.get('type') == 'RealESRGANDegradation':
            node.pop('kernel_sizes', None)  # the tiny crops' kernels; 512 px takes the defaults
        if frozen_dtype and node.get('type') in ('SDUNet', 'SDVAE', 'SDTextEncoder',
                                                 'SDT2IAdapter'):
            node['torch_dtype'] = frozen_dtype

    _walk(model, adjust)
    if arch == 'sd14':
        # OSEDiff's training LPIPS; a random VGG costs the same time and memory.
        model['lpips'] = dict(net='vgg', backbone_weights=None)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(model.get(key), dict):
            model[key].update(value)
        else:
            model[key] = value
    return model


# ----------------------------------------------------------------------------- helpers
def _sync(device: str) -> None:
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _median_seconds(fn: Callable[[], Any], runs: int, warmup: int, device: str) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _reset_peak(device: str) -> None:
    import torch
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()


def _memory(device: str) -> Dict[str, Optional[float]]:
    """Peak device memory (GiB) since the last reset, or the process's peak RSS on CPU."""
    import resource

    import torch
    out: Dict[str, Optional[float]] = dict(
        peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2))
    if device.startswith('cuda'):
        out.update(peak_alloc_gib=round(torch.cuda.max_memory_allocated() / GiB, 2),
                   peak_reserved_gib=round(torch.cuda.max_memory_reserved() / GiB, 2))
    return out


def _gt_batch(batch: int, size: int) -> Dict[str, Any]:
    import torch

    from icmsr.structures import SRDataSample
    gen = torch.Generator().manual_seed(0)
    gts = [torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
           for _ in range(batch)]
    return dict(inputs=dict(gt=gts),
                data_samples=[SRDataSample(metainfo=dict(prompt='a photo')) for _ in gts])


# ----------------------------------------------------------------------------- cases
def case_train(args: argparse.Namespace, batch: int, frozen: Optional[str], amp: Optional[str],
               ckpt: bool, optimizer: str, share: bool) -> Dict[str, Any]:
    """Peak memory and median s/iteration of ``ICMSR.train_step``."""
    import torch
    from mmengine.optim import build_optim_wrapper

    from icmsr.registry import MODELS
    torch.manual_seed(0)
    start = time.perf_counter()
    cfg = model_config(args.arch, frozen_dtype=frozen, share_unet=share,
                       generator=dict(gradient_checkpointing=ckpt))
    model = MODELS.build(cfg).to(args.device).train()
    part = dict(type='AutocastNonFiniteGuardOptimWrapper', dtype=amp) if amp else \
        dict(type='NonFiniteGuardOptimWrapper')
    part.update(optimizer=dict(type=optimizer, lr=5e-5, weight_decay=1e-2),
                clip_grad=dict(max_norm=1.0))
    optim = build_optim_wrapper(model, dict(constructor='ICMSROptimWrapperConstructor',
                                            generator=dict(part), aux_diffusion=dict(part)))
    build_s = time.perf_counter() - start
    data = _gt_batch(batch, args.size)
    weights = torch.cuda.memory_allocated() / GiB if args.device.startswith('cuda') else None
    _reset_peak(args.device)
    step_s = _median_seconds(lambda: model.train_step(data, optim), args.train_steps,
                             args.train_warmup, args.device)
    trainable = sum(p.numel() for ps in model.trainable_groups().values() for p in ps)
    return dict(s_per_iter=round(step_s, 4), build_s=round(build_s, 1),
                weights_gib=None if weights is None else round(weights, 2),
                trainable_m=round(trainable / 1e6, 2), **_memory(args.device))


def compile_generator(generator: Any, backend: str = 'inductor', mode: Optional[str] = None,
                      fullgraph: bool = False) -> None:
    """``torch.compile`` the generator's UNet, VAE encoder and VAE decoder in place.

    The generator's ``encode``/``denoise``/``decode`` keep running Python (tiling,
    the x0 formula); the three networks inside them become compiled modules.

    Args:
        generator: An ``OneStepGenerator`` (fused or not).
        backend: ``torch.compile`` backend (``'inductor'``; ``'eager'`` only captures graphs).
        mode: inductor mode (``'default'``, ``'reduce-overhead'``, ``'max-autotune'``...).
        fullgraph: Fail on any graph break instead of splitting the graph.
    """
    import torch
    kwargs: Dict[str, Any] = dict(backend=backend, fullgraph=fullgraph)
    if mode is not None:
        kwargs['mode'] = mode
    generator.unet = torch.compile(generator.unet, **kwargs)
    generator.vae.encoder = torch.compile(generator.vae.encoder, **kwargs)
    generator.vae.decoder = torch.compile(generator.vae.decoder, **kwargs)


def _inference_model(args: argparse.Namespace, dtype: str, fuse: bool, sdpa: bool = True,
                     channels_last: bool = False, compile: bool = False):
    """Build the inference model and apply the variant's switches; return (model, notes)."""
    import torch

    from icmsr.apis import init_model
    torch.manual_seed(0)
    model = init_model(model_config(args.arch), None, device=args.device, dtype=dtype, fuse=fuse,
                       allow_untrained=True)
    gen = model.generator
    notes: Dict[str, Any] = {}
    if not sdpa:
        from diffusers.models.attention_processor import AttnProcessor
        gen.unet.set_attn_processor(AttnProcessor())
        gen.vae.set_attn_processor(AttnProcessor())
    if channels_last:
        gen.unet.to(memory_format=torch.channels_last)
        gen.vae.to(memory_format=torch.channels_last)
    if compile:
        mode = args.compile_mode if args.compile_backend == 'inductor' else None
        compile_generator(gen, backend=args.compile_backend, mode=mode)
        notes.update(compile_backend=args.compile_backend, compile_mode=mode)
    return model, notes


def case_infer(args: argparse.Namespace, dtype: str, fuse: bool, **switches: Any) -> Dict[str, Any]:
    """End-to-end latency at ``size``² output (LQ ``size / 4``), prompt cached and not."""
    import torch

    from icmsr.apis import TileSettings
    model, notes = _inference_model(args, dtype, fuse, **switches)
    side = args.size
    lq = torch.rand(1, 3, side // 4, side // 4, generator=torch.Generator().manual_seed(0))
    cached = model.encode_prompts(['a photo'])
    tiles = TileSettings(side, 64, side, 64)  # one tile: the whole image

    def with_text(lq, prompt):
        return model.super_resolve(lq, [prompt], tiles=tiles)

    def no_text(lq, prompt):
        return model.super_resolve(lq, prompt_embeds=cached, tiles=tiles)
    start = time.perf_counter()
    no_text(lq, 'a photo')  # compilation, when compiled
    _sync(args.device)
    first_s = time.perf_counter() - start
    _reset_peak(args.device)
    cached_s = _median_seconds(lambda: no_text(lq, 'a photo'), args.runs, args.warmup, args.device)
    text_s = _median_seconds(lambda: with_text(lq, 'a photo'), args.runs, args.warmup, args.device)
    encode_s = _median_seconds(lambda: model.encode_prompts(['a photo']), args.runs, args.warmup,
                               args.device)
    return dict(ms_prompt_cached=round(cached_s * 1e3, 2), ms_with_text=round(text_s * 1e3, 2),
                ms_text_encoder=round(encode_s * 1e3, 2), first_call_s=round(first_s, 2),
                out=side, **notes, **_memory(args.device))


def case_tiled(args: argparse.Namespace, dtype: str) -> Dict[str, Any]:
    """Peak memory and time of a ``4 * size``² output with ``size`` tiles."""
    import torch

    from icmsr.apis import TileSettings
    model, _ = _inference_model(args, dtype, fuse=True)
    out, tile = 4 * args.size, args.size
    lq = torch.rand(1, 3, out // 4, out // 4, generator=torch.Generator().manual_seed(0))
    tiles = TileSettings(tile, 64, tile, 64)

    def run(lq, prompt):
        return model.super_resolve(lq, [prompt], tiles=tiles)
    run(lq, '')  # warm-up at the full size (allocator, kernels)
    _sync(args.device)
    _reset_peak(args.device)
    seconds = _median_seconds(lambda: run(lq, ''), max(1, args.runs // 10), 0, args.device)
    return dict(out=out, tile=tile, s_per_image=round(seconds, 3), **_memory(args.device))


def case_degradation(args: argparse.Namespace) -> Dict[str, Any]:
    """Images/s of the Real-ESRGAN degradation at batch 16 on the device and on the CPU."""
    import torch

    from icmsr.degradations import RealESRGANDegradation
    batch, result = 16, {}
    devices = [args.device] + (['cpu'] if args.device != 'cpu' else [])
    for device in devices:
        torch.manual_seed(0)
        deg = RealESRGANDegradation().to(device)
        x = torch.rand(batch, 3, args.size, args.size, device=device)
        runs = args.degradation_runs
        if device != args.device:  # the CPU run: fewer repetitions
            runs = max(1, runs // 3)
        seconds = _median_seconds(lambda: deg(x), runs, 1, device)
        result[f'img_per_s_{device.split(":")[0]}'] = round(batch / seconds, 2)
    result.update(batch=batch, size=args.size)
    return result


def case_metrics(args: argparse.Namespace) -> Dict[str, Any]:
    """Images/s of PSNR and SSIM (the evaluation's scorers) and LPIPS-VGG on the device."""
    import torch

    from icmsr.evaluation.scorers import build_scorers
    from icmsr.models.losses import LPIPSLoss
    gen = torch.Generator().manual_seed(0)
    gt = (torch.rand(1, 3, args.size, args.size, generator=gen) * 255).round() / 255
    pred = ((gt + 0.05 * torch.randn(gt.shape, generator=gen)).clamp(0, 1) * 255).round() / 255
    gt, pred = gt.to(args.device), pred.to(args.device)
    result: Dict[str, Any] = dict(size=args.size)
    for name, scorer in build_scorers(['psnr', 'ssim'], device=args.device).items():
        result[f'{name}_img_per_s'] = round(1 / _median_seconds(
            lambda: scorer(pred, gt), args.runs, args.warmup, args.device), 1)
    # Same network as the LPIPS metric; random backbone (no download), same compute.
    lpips = LPIPSLoss(net='vgg', backbone_weights=None).to(args.device).eval()
    with torch.no_grad():
        result['lpips_vgg_img_per_s'] = round(1 / _median_seconds(
            lambda: lpips(pred * 2 - 1, gt * 2 - 1), args.runs, args.warmup, args.device), 1)
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _tiny_data(root: str) -> str:
    """Two smooth random training PNGs for configs/icmsr_tiny.py (no downloads, no test set)."""
    import cv2
    import numpy as np
    os.makedirs(osp.join(root, 'train'), exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        smooth = rng.random((12, 12, 3)).repeat(8, 0).repeat(8, 1)
        if not cv2.imwrite(osp.join(root, 'train', f'{i}.png'), (smooth * 255).astype(np.uint8)):
            raise OSError(f'could not write a training image under {root}')
    return root


def case_dist_train(args: argparse.Namespace) -> Dict[str, Any]:
    """``tools/dist_train.sh configs/icmsr_tiny.py 1`` for a few iterations."""
    iters = args.dist_iters
    with tempfile.TemporaryDirectory() as tmp:
        backend = 'nccl' if args.device.startswith('cuda') else 'gloo'
        env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()),
                   ICMSR_TINY_DATA=_tiny_data(osp.join(tmp, 'data')))
        cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), TINY_CONFIG, '1',
               '--work-dir', osp.join(tmp, 'work'), '--cfg-options',
               f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=100000',
               f'env_cfg.dist_cfg.backend={backend}', 'default_hooks.logger.interval=1',
               'default_hooks.checkpoint.interval=100000',
               'default_hooks.visualization.interval=100000',
               # Training only: no validation set to prepare, no metric weights.
               'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None']
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    done = f'Iter(train) [{iters}/{iters}]' in log
    if proc.returncode != 0 or not done:
        raise RuntimeError(f'dist_train.sh exited {proc.returncode}: ' + log[-1500:])
    return dict(iters=iters, backend=backend, wall_s=round(wall, 1))


CASES = dict(train=case_train, infer=case_infer, tiled=case_tiled, degradation=case_degradation,
             metrics=case_metrics, dist_train=case_dist_train)
