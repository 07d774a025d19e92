"""Seconds per ICM-SR train_step and peak RSS: UNet layouts and regularizers.

Each (architecture, layout, regularizer) runs in its own subprocess so that its peak
resident memory (``ru_maxrss``) is measured cleanly. Weights are random (the
architecture, not the checkpoint, sets time and memory).

    python tools/benchmarks/train_step.py                       # tiny and sd14, 256 px
    python tools/benchmarks/train_step.py --arch tiny --steps 5
    python tools/benchmarks/train_step.py --arch sd14 --size 256 --steps 2 --threads 2
    python tools/benchmarks/train_step.py --arch tiny --layout shared --regularizer both

Layouts:
    shared  one frozen UNet; generator / teacher / fake score are LoRA roles on it
    naive   the generator's UNet plus separate teacher and fake-score copies
Regularizers (both with the colormap + Canny adapters on the teacher):
    vsd     VSDRegularizer (ICM-SR)
    tsd     TSDRegularizer as configs/tsdsr.py: VSD + TSM over a 4-step DASM trajectory
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, List

# The TSD settings of configs/tsdsr.py.
TSD_REGULARIZER = dict(type='TSDRegularizer', cfg_scale=7.5, t_range=(50, 950), tsm_weight=0.3,
                       dasm=dict(steps=4, stride=50, step_weights=(1.0, 0.3, 0.3, 0.3),
                                 jitter=True))


def _worker(arch: str, layout: str, regularizer: str, size: int, steps: int, batch: int,
            warmup: int) -> Dict[str, float]:
    """Build the model, run ``steps`` timed train steps after ``warmup`` untimed ones."""
    import warnings

    import torch
    from mmengine.optim import build_optim_wrapper

    from bench_models import bench_model_config
    from icmsr.registry import MODELS
    from icmsr.utils.setup_env import register_all_modules
    from icmsr.structures import SRDataSample

    warnings.simplefilter('ignore')
    register_all_modules()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    extra = dict(regularizer=TSD_REGULARIZER) if regularizer == 'tsd' else {}
    model = MODELS.build(bench_model_config(
        arch, 'multi', share_unet=(layout == 'shared'), lpips=dict(net='vgg', backbone_weights=None),
        **extra))
    build_s = time.perf_counter() - t0
    model.train()
    ow = build_optim_wrapper(model, dict(
        constructor='ICMSROptimWrapperConstructor',
        generator=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=5e-5),
                       clip_grad=dict(max_norm=1.0)),
        aux_diffusion=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=5e-5))))
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=dict(gt=[torch.randint(0, 256, (3, size, size), generator=g,
                                              dtype=torch.uint8) for _ in range(batch)]),
                data_samples=[SRDataSample(metainfo=dict(prompt='a photo')) for _ in range(batch)])
    for _ in range(warmup):  # allocator, optimizer states
        model.train_step(data, ow)
    times: List[float] = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.train_step(data, ow)
        times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for group in model.trainable_groups().values() for p in group)
    return dict(build_s=build_s, step_s=sum(times) / len(times), steps=steps,
                peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                params_m=params / 1e6, trainable_m=trainable / 1e6)


def main() -> None:
    """Parse arguments; run each configuration in a subprocess and print a table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arch', choices=['tiny', 'sd14', 'all'], default='all')
    parser.add_argument('--layout', choices=['shared', 'naive', 'both'], default='both')
    parser.add_argument('--regularizer', choices=['vsd', 'tsd', 'both'], default='vsd')
    parser.add_argument('--size', type=int, default=256, help='GT crop size (px)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--steps', type=int, default=3, help='timed steps after the warm-up')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps first')
    parser.add_argument('--threads', type=int, default=None, help='torch threads per run')
    parser.add_argument('--worker', nargs=3, metavar=('ARCH', 'LAYOUT', 'REG'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        print(json.dumps(_worker(*args.worker, args.size, args.steps, args.batch, args.warmup)))
        return

    archs = ['tiny', 'sd14'] if args.arch == 'all' else [args.arch]
    layouts = ['shared', 'naive'] if args.layout == 'both' else [args.layout]
    regs = ['vsd', 'tsd'] if args.regularizer == 'both' else [args.regularizer]
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for arch in archs:
        for layout in layouts:
            for reg in regs:
                cmd = [sys.executable, __file__, '--worker', arch, layout, reg,
                       '--size', str(args.size), '--steps', str(args.steps),
                       '--batch', str(args.batch), '--warmup', str(args.warmup)]
                if args.threads:
                    cmd += ['--threads', str(args.threads)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if proc.returncode != 0:
                    sys.exit(f'{arch}/{layout}/{reg} failed:\n{proc.stderr[-3000:]}')
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                results.setdefault(arch, {})[f'{layout}/{reg}'] = res
                print(f'{arch:5s} {layout:6s} {reg} {args.size}px b{args.batch}: '
                      f'{res["step_s"]:8.2f} s/step  peak RSS {res["peak_rss_gb"]:6.2f} GB  '
                      f'params {res["params_m"]:8.1f} M (trainable {res["trainable_m"]:.2f} M)  '
                      f'build {res["build_s"]:.1f} s', flush=True)
    for arch, res in results.items():
        # Ratios: shared/naive layout per regulariser, TSD/VSD per layout.
        pairs = [(f'{reg}: shared/naive', f'shared/{reg}', f'naive/{reg}') for reg in regs]
        pairs += [(f'{layout}: tsd/vsd', f'{layout}/tsd', f'{layout}/vsd') for layout in layouts]
        for label, top, bottom in pairs:
            a, b = res.get(top), res.get(bottom)
            if a and b:
                print(f'{arch} {label} peak RSS = {a["peak_rss_gb"] / b["peak_rss_gb"]:.2f}x, '
                      f'time = {a["step_s"] / b["step_s"]:.2f}x')

if __name__ == '__main__':
    main()
