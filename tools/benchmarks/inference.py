"""Inference latency and peak memory per image: tiny vs SD v1-4 architecture (random weights).

Every configuration runs in its own subprocess, so its peak resident memory is
clean. Peak memory is reported twice: the whole process (weights included) and
the part added while super-resolving (the process's high-water mark is reset
through ``/proc/self/clear_refs`` after the model is built and warmed up). On
CUDA, ``torch.cuda.max_memory_allocated`` is used instead.

Examples::

    python tools/benchmarks/inference.py                      # tiny, all variants + large input
    python tools/benchmarks/inference.py --arch sd14 --variants fused-fp32 unfused-fp32 fused-bf16 \\
        --large 1024 --repeats 1

Prints one row per configuration and the ratios fused/unfused, bf16/fp32 and
large/small input.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

VARIANTS = ('fused-fp32', 'unfused-fp32', 'fused-bf16', 'unfused-bf16', 'fused-fp16')


def _rss_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in KiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return -1


def _reset_peak_rss() -> bool:
    """Reset the process's resident high-water mark (Linux >= 4.0); False if unsupported."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def worker(arch: str, variant: str, out_side: int, tile: int, repeats: int, device: str,
           threads: Optional[int], warmup: int = 1) -> Dict[str, Any]:
    """Build one model, super-resolve an ``out_side``-square output, measure time and memory.

    Args:
        arch: ``'tiny'`` or ``'sd14'``.
        variant: One of :data:`VARIANTS`.
        out_side: Output side; the LQ is ``out_side / 4``.
        tile: Tile size in output pixels (also the VAE tile).
        repeats: Timed repetitions after one warm-up.
        device: ``'cpu'`` or ``'cuda'``.
        threads: torch CPU threads (None: torch's default).
        warmup: Untimed runs before timing (0 is fine for slow CPU runs; the first
            timed run then includes one-off allocations).

    Returns:
        The measurements.
    """
    import torch
    if threads:
        torch.set_num_threads(threads)
    from bench_models import bench_model_config
    from icmsr.apis import TileSettings, init_model
    from icmsr.models import OneStepSR
    fuse_mode, dtype = variant.split('-')
    dtype = dict(fp32='float32', bf16='bfloat16', fp16='float16')[dtype]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = init_model(OneStepSR.inference_config(bench_model_config(arch, None)), None,
                       device=device, dtype=dtype, fuse=fuse_mode == 'fused', allow_untrained=True)
    build_s = time.perf_counter() - t0
    tiles = TileSettings(tile, 64, tile, 64)

    def runner(lq, prompt):
        return model.super_resolve(lq, [prompt], tiles=tiles)
    lq = torch.rand(1, 3, out_side // 4, out_side // 4)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    for _ in range(warmup):  # allocator, kernel selection
        runner(lq, '')
    sync()
    rss_before = _rss_kib('VmRSS')
    reset = _reset_peak_rss()
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        runner(lq, '')
        sync()
        times.append(time.perf_counter() - t0)
    result = dict(arch=arch, variant=variant, out=out_side, tile=tile, device=device, warmup=warmup,
                  threads=torch.get_num_threads(), build_s=round(build_s, 1),
                  latency_s=round(sorted(times)[len(times) // 2], 3), repeats=repeats,
                  rss_model_mib=round(rss_before / 1024), peak_rss_mib=round(_rss_kib('VmHWM') / 1024),
                  peak_reset=reset)
    result['infer_rss_mib'] = result['peak_rss_mib'] - result['rss_model_mib'] if reset else None
    if device.startswith('cuda'):
        result['cuda_peak_mib'] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
    return result


def run_config(arch: str, variant: str, out_side: int, args: argparse.Namespace) -> Dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter and parse its JSON line."""
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', arch, variant, str(out_side),
           '--tile', str(args.tile), '--repeats', str(args.repeats), '--device', args.device,
           '--warmup', str(args.warmup)]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        return dict(arch=arch, variant=variant, out=out_side, error=proc.stderr.strip().splitlines()[-1:])
    return json.loads(lines[-1])


def print_table(rows: List[Dict[str, Any]]) -> None:
    """Print the measurements and the derived ratios."""
    mem = 'cuda_peak_mib' if rows and 'cuda_peak_mib' in rows[0] else 'infer_rss_mib'
    print(f'{"arch":<5} {"variant":<13} {"out":>5} {"latency s":>10} {"model MiB":>10} '
          f'{"peak MiB":>9} {mem:>14}')
    for r in rows:
        if 'error' in r:
            print(f'{r["arch"]:<5} {r["variant"]:<13} {r["out"]:>5}  failed: {r["error"]}')
            continue
        print(f'{r["arch"]:<5} {r["variant"]:<13} {r["out"]:>5} {r["latency_s"]:>10.3f} '
              f'{r["rss_model_mib"]:>10} {r["peak_rss_mib"]:>9} {str(r.get(mem)):>14}')
    ok = {(r['arch'], r['variant'], r['out']): r for r in rows if 'error' not in r}
    print('\nratios')
    for (arch, variant, out), r in sorted(ok.items()):
        if variant == 'fused-fp32':
            for other, label in (('unfused-fp32', 'fused/unfused latency'),
                                 ('fused-bf16', 'bf16/fp32 latency')):
                o = ok.get((arch, other, out))
                if o:
                    num, den = (r, o) if other.startswith('unfused') else (o, r)
                    print(f'  {arch} {out}: {label} = {num["latency_s"] / den["latency_s"]:.2f}')
            o = ok.get((arch, 'fused-bf16', out))
            if o:
                ratio = o['rss_model_mib'] / r['rss_model_mib']
                print(f'  {arch} {out}: bf16/fp32 model memory = {ratio:.2f}')
    for (arch, variant, out), r in sorted(ok.items()):
        for (a2, v2, o2), big in sorted(ok.items()):
            if a2 == arch and v2 == variant and o2 > out and r.get(mem) and big.get(mem):
                print(f'  {arch} {variant}: {o2}^2 vs {out}^2 output ({(o2 / out) ** 2:.0f}x pixels): '
                      f'inference memory x{big[mem] / r[mem]:.2f}, '
                      f'latency x{big["latency_s"] / r["latency_s"]:.1f}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description='ICM-SR inference latency / peak memory benchmark')
    p.add_argument('--arch', nargs='+', default=['tiny'], choices=['tiny', 'sd14'])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS[:4]), choices=VARIANTS)
    p.add_argument('--size', type=int, default=512, help='output side of the per-image measurement')
    p.add_argument('--large', type=int, default=2048,
                   help='output side of the tiled large-input run (0: skip)')
    p.add_argument('--large-variants', nargs='+', default=['fused-fp32'], choices=VARIANTS)
    p.add_argument('--tile', type=int, default=512, help='tile size in output pixels')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1, help='untimed runs before timing')
    p.add_argument('--device', default='cpu')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--json', help='also write the rows to this file')
    p.add_argument('--worker', nargs=3, metavar=('ARCH', 'VARIANT', 'OUT'), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run every configuration in a subprocess and print the table."""
    args = parse_args(argv)
    if args.worker:
        arch, variant, out = args.worker
        print(json.dumps(worker(arch, variant, int(out), args.tile, args.repeats, args.device,
                                args.threads, args.warmup)))
        return 0
    rows = []
    for arch in args.arch:
        plan = [(v, args.size) for v in args.variants]
        if args.large:
            plan += [(v, args.large) for v in args.large_variants]
        for variant, side in plan:
            row = run_config(arch, variant, side, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print()
    print_table(rows)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
