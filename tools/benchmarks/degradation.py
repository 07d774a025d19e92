"""Throughput of the Real-ESRGAN degradation (default pipeline and with USM).

Every timed run draws a fresh degradation (seeds ``seed, seed + 1, ...``), so
the median covers the pipeline's random branches (up/down-scaling, Gaussian or
Poisson noise, stage order); the spread is printed too. ``--components`` also
times the building blocks at full resolution.

Wall-clock figures depend on what else runs on the machine, so the process CPU
time per batch is printed as well: on an otherwise idle machine the wall time
lies between CPU time / threads and CPU time.

Example::

    python tools/benchmarks/degradation.py --runs 30
    taskset -c 0,1 python tools/benchmarks/degradation.py --runs 30 --components
"""
import argparse
import glob
import os
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch

import icmsr  # noqa: F401  (basicsr import shim)
from icmsr.degradations import RealESRGANDegradation

TARGET_S = 1.5  # seconds per batch of 4 x 512^2 on 2 CPU cores


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--runs', type=int, default=20, help='timed runs per configuration')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    p.add_argument('--input', default=None,
                   help='folder of images to build the batch from (default: random images)')
    p.add_argument('--components', action='store_true', help='also time the building blocks')
    return p.parse_args()


def make_batch(args: argparse.Namespace) -> torch.Tensor:
    """A ``(batch, 3, size, size)`` batch in ``[0, 1]`` (centre crops of real images if given)."""
    if args.input:
        import cv2
        paths = sorted(glob.glob(os.path.join(args.input, '*.png')) +
                       glob.glob(os.path.join(args.input, '*.jpg')))
        if not paths:
            raise SystemExit(f'no .png/.jpg images in {args.input}')
        imgs = []
        for i in range(args.batch):
            img = cv2.cvtColor(cv2.imread(paths[i % len(paths)]), cv2.COLOR_BGR2RGB)
            img = cv2.resize(img, (args.size, args.size), interpolation=cv2.INTER_AREA)
            imgs.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        return torch.stack(imgs).to(args.device)
    g = torch.Generator().manual_seed(args.seed)
    return torch.rand(args.batch, 3, args.size, args.size, generator=g).to(args.device)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_runs(fn: Callable[[int], object], runs: int, warmup: int,
              device: str) -> Tuple[List[float], List[float]]:
    """Wall-clock and process-CPU seconds of ``fn(i)`` for ``runs`` calls after ``warmup``."""
    for i in range(warmup):
        fn(-1 - i)
    _sync(device)
    wall, cpu = [], []
    for i in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(i)
        _sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def report(name: str, wall: List[float], cpu: List[float], batch: int) -> Dict[str, float]:
    """Print median/p90/max seconds per batch, images/s, the ratio to the target, CPU time."""
    wall = sorted(wall)
    median = statistics.median(wall)
    p90 = wall[min(len(wall) - 1, int(0.9 * len(wall)))]
    cpu_median = statistics.median(cpu)
    print(f'{name:<10} wall: median {median:6.3f} s/batch  p90 {p90:6.3f}  max {wall[-1]:6.3f}  '
          f'{batch / median:6.2f} img/s  median/target {median / TARGET_S:5.2f}  |  '
          f'CPU time: median {cpu_median:6.3f} s/batch')
    return dict(median=median, p90=p90, max=wall[-1], cpu_median=cpu_median)


def time_components(x: torch.Tensor, args: argparse.Namespace) -> None:
    """Median time of each building block at the input resolution."""
    from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
    from basicsr.utils import DiffJPEG, USMSharp
    from basicsr.utils.img_process_util import filter2D


    kernels = torch.rand(x.shape[0], 21, 21, device=x.device)
    kernels /= kernels.sum(dim=(1, 2), keepdim=True)
    jpeger = DiffJPEG(differentiable=False).to(x.device)
    quality = torch.full((x.shape[0],), 60.0, device=x.device)
    blocks = {
        'filter2D 21x21 (conv)': lambda _: filter2D(x, kernels),
        'DiffJPEG': lambda _: jpeger(x, quality=quality.clone()),
        'gaussian noise': lambda _: random_add_gaussian_noise_pt(x, (1, 30), 0.4, True, False),
        'poisson noise': lambda _: random_add_poisson_noise_pt(x, (0.05, 3), 0.4, True, False),
        'USM (basicsr)': lambda _: USMSharp().to(x.device)(x),
    }
    print(f'components at {tuple(x.shape)} (median of {max(3, args.runs // 4)}):')
    for name, fn in blocks.items():
        wall, cpu = time_runs(fn, max(3, args.runs // 4), 1, args.device)
        print(f'  {name:<24} wall {statistics.median(wall):6.3f} s   CPU {statistics.median(cpu):6.3f} s')


def main() -> None:
    """Run the benchmark and print the figures."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    print(f'device={args.device} torch threads={torch.get_num_threads()} usable cores={affinity} '
          f'load average (1/5/15 min)={load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}')
    x = make_batch(args)
    print(f'batch {tuple(x.shape)}, {args.runs} timed runs, target {TARGET_S} s/batch')
    for name, cfg in (('default', {}), ('with USM', {'usm': {}})):
        deg = RealESRGANDegradation(**cfg)

        def run(i: int, deg: RealESRGANDegradation = deg) -> object:
            return deg(x, generator=torch.Generator().manual_seed(args.seed + i))

        report(name, *time_runs(run, args.runs, args.warmup, args.device), args.batch)
    if args.components:
        time_components(x, args)
    load = os.getloadavg() if hasattr(os, 'getloadavg') else (float('nan'),) * 3
    print(f'load average at the end: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}')


if __name__ == '__main__':
    main()
