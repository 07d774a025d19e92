"""Seconds per ICM-SR train_step and peak RSS: shared-UNet layout vs three UNet copies.

Each (architecture, layout) runs in its own subprocess so that its peak resident
memory (``ru_maxrss``) is measured cleanly. Weights are random (the architecture,
not the checkpoint, sets time and memory).

    python tools/benchmarks/train_step.py                       # tiny and sd14, 256 px
    python tools/benchmarks/train_step.py --arch tiny --steps 5
    python tools/benchmarks/train_step.py --arch sd14 --size 256 --steps 2 --threads 2

Layouts:
    shared  one frozen UNet; generator / teacher / fake score are LoRA roles on it
    naive   the generator's UNet plus separate teacher and fake-score copies
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, List


def _worker(arch: str, layout: str, size: int, steps: int, batch: int) -> Dict[str, float]:
    """Build the model, run ``steps`` timed train steps after one warm-up."""
    import warnings

    import torch
    from mmengine.optim import build_optim_wrapper

    from bench_models import bench_model_config
    from icmsr.registry import MODELS, register_all_modules
    from icmsr.structures import SRDataSample

    warnings.simplefilter('ignore')
    register_all_modules()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = MODELS.build(bench_model_config(
        arch, 'multi', share_unet=(layout == 'shared'), lpips=dict(net='vgg', backbone_weights=None)))
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
    model.train_step(data, ow)  # warm-up (allocator, optimizer states)
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
    parser.add_argument('--size', type=int, default=256, help='GT crop size (px)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--steps', type=int, default=3, help='timed steps after 1 warm-up')
    parser.add_argument('--threads', type=int, default=None, help='torch threads per run')
    parser.add_argument('--worker', nargs=2, metavar=('ARCH', 'LAYOUT'), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        print(json.dumps(_worker(*args.worker, args.size, args.steps, args.batch)))
        return

    archs = ['tiny', 'sd14'] if args.arch == 'all' else [args.arch]
    layouts = ['shared', 'naive'] if args.layout == 'both' else [args.layout]
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    for arch in archs:
        for layout in layouts:
            cmd = [sys.executable, __file__, '--worker', arch, layout, '--size', str(args.size),
                   '--steps', str(args.steps), '--batch', str(args.batch)]
            if args.threads:
                cmd += ['--threads', str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode != 0:
                sys.exit(f'{arch}/{layout} failed:\n{proc.stderr[-3000:]}')
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results.setdefault(arch, {})[layout] = res
            print(f'{arch:5s} {layout:6s} {args.size}px b{args.batch}: '
                  f'{res["step_s"]:8.2f} s/step  peak RSS {res["peak_rss_gb"]:6.2f} GB  '
                  f'params {res["params_m"]:8.1f} M (trainable {res["trainable_m"]:.2f} M)  '
                  f'build {res["build_s"]:.1f} s', flush=True)
    for arch, res in results.items():
        if 'shared' in res and 'naive' in res:
            print(f'{arch}: shared/naive peak RSS = '
                  f'{res["shared"]["peak_rss_gb"] / res["naive"]["peak_rss_gb"]:.2f}x, '
                  f'time = {res["shared"]["step_s"] / res["naive"]["step_s"]:.2f}x')


if __name__ == '__main__':
    main()
