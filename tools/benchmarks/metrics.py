"""Seconds per image of PSNR, SSIM and NIQE on CPU at 512x512 (and the RealSR check).

::

    python tools/benchmarks/metrics.py                 # timing on 8 RealSR pairs
    python tools/benchmarks/metrics.py --full          # + averages over all 100 vs OSEDiff's log
    python tools/benchmarks/metrics.py --threads 2 --images 16
    python tools/benchmarks/metrics.py --pyiqa         # + pyiqa's own SSIM

Uses ``../shared/data/realsr`` (OSEDiff outputs vs GT, 512x512) when present,
else random 512x512 images. Prints one line per metric: seconds per image
(median of the images after one warm-up image). With ``--pyiqa`` it also times
pyiqa's own SSIM (``create_metric('ssim')``, which ``FastSSIMScorer`` replaces)
and prints the largest difference from ours.
"""
import argparse
import os
import re
import statistics
import sys
import time

import torch
from realsr_data import realsr_root

ROOT = realsr_root()


def _pairs(n: int):
    """Yield ``(key, pred, gt)`` 512x512 pairs: RealSR when present, else random."""
    from icmsr.evaluation.folder_eval import read_image
    if os.path.isdir(os.path.join(ROOT, 'results_osediff')):
        names = sorted(os.listdir(os.path.join(ROOT, 'results_osediff')))[:n]
        for name in names:
            yield (os.path.splitext(name)[0],
                   read_image(os.path.join(ROOT, 'results_osediff', name))[None],
                   read_image(os.path.join(ROOT, 'test_HR', name))[None])
    else:
        g = torch.Generator().manual_seed(0)
        for i in range(n):
            gt = (torch.rand(1, 3, 512, 512, generator=g) * 255).round() / 255
            pred = (gt + 0.05 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
            pred = (pred * 255).round() / 255
            yield f'random_{i}', pred, gt


def _pyiqa_scorers():
    """pyiqa's own SSIM as a ``(pred, gt) -> [value]`` callable."""
    import pyiqa

    from icmsr.evaluation.scorers import METRIC_INFO
    ssim = pyiqa.create_metric('ssim', device='cpu', **METRIC_INFO['ssim'].options)
    return {'pyiqa_ssim': lambda pred, gt: [float(ssim(pred, gt))]}


def main() -> int:
    """Run the benchmark and print the figures.

    Returns:
        Exit code (1 if ``--full`` averages miss OSEDiff's log).
    """
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=8, help='images to time (default 8)')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    p.add_argument('--full', action='store_true',
                   help='score all 100 RealSR images and compare averages with OSEDiff\'s log')
    p.add_argument('--pyiqa', action='store_true',
                   help="also time pyiqa's own SSIM and compare the values")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from icmsr.evaluation.scorers import build_scorers
    names = ['psnr', 'ssim', 'niqe']
    scorers = build_scorers(names, device='cpu')
    if args.pyiqa:
        extra = _pyiqa_scorers()
        scorers.update(extra)
        names += list(extra)
    n = 100 if args.full else args.images + 1
    times = {m: [] for m in names}
    values = {m: [] for m in names}
    for i, (key, pred, gt) in enumerate(_pairs(n)):
        for m in names:
            start = time.perf_counter()
            values[m].append(scorers[m](pred, gt)[0])
            if i > 0:  # first image: warm-up
                times[m].append(time.perf_counter() - start)
    src = 'RealSR (OSEDiff outputs vs GT)' if os.path.isdir(ROOT) else 'random'
    print(f'CPU, {torch.get_num_threads()} thread(s), 512x512, {src}, '
          f'{len(times["psnr"])} timed image(s); load average {os.getloadavg()[0]:.1f} '
          f'on {os.cpu_count()} core(s)')
    for m in names:
        print(f'{m:5s} {statistics.median(times[m]):.3f} s/image')
    print(f'total {sum(statistics.median(times[m]) for m in ("psnr", "ssim", "niqe")):.3f} s/image')
    for m in names[3:]:
        diff = max(abs(a - b) for a, b in zip(values[m], values[m[6:]]))
        print(f'{m} vs ours: {statistics.median(times[m]) / statistics.median(times[m[6:]]):.1f}x '
              f'the time, values differ by at most {diff:.1e}')
    if args.full:
        log = open(os.path.join(ROOT, 'osediff_metrics.log')).read().split('Average Metrics')[1]
        ref = {k.lower(): float(v) for k, v in re.findall(r'(\w+): ([\d.]+)', log)}
        ok = True
        for m in ('psnr', 'ssim', 'niqe'):  # PSNR/SSIM: equal to 4 decimals; NIQE: within 1e-3
            mean = sum(values[m]) / len(values[m])
            good = abs(mean - ref[m]) <= 1e-3 if m == 'niqe' else round(mean, 4) == ref[m]
            ok &= good
            verdict = 'OK' if good else 'MISMATCH'
            print(f'{m:5s} average {mean:.5f} vs OSEDiff log {ref[m]} -> {verdict}')
        return 0 if ok else 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
