"""The device benchmark suite: training memory and speed, inference latency, tiling, data, metrics.

One command, every case in its own subprocess with its own timeout, each result
appended to a JSON file as soon as it exists (a run cut off by the machine's
time limit still reports what it measured), a table at the end::

    python tools/benchmarks/gpu_suite.py                          # CUDA, SD v1-4 arch, 512 px
    python tools/benchmarks/gpu_suite.py --device cpu --size 128 --arch tiny   # smoke run

Weights are random: the SD v1-4 architecture (or the tiny one), not a checkpoint,
sets time and memory. The cases (measured in ``gpu_cases.py``; those the targets
are read from run first, so a cut-off run keeps them):

* ``train_*``: one ICM-SR ``train_step`` (generator + aux update) at ``size``² and
  batch 1 / 4: peak ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``
  and median s/iteration after warm-up. Variants: ``fp32``; ``bf16`` (frozen parts
  in bf16 + bf16 autocast on both optimizers); ``bf16_ckpt`` (+ gradient
  checkpointing of the generator's UNet and VAE); ``bf16_ckpt_8bit`` (+ 8-bit
  AdamW) = configs/icmsr_multi_24gb.py; ``naive_fp32`` (teacher and fake score
  with their own UNet copies) for the shared/naive ratio.
* ``infer_*``: 512² output from a 128² LQ, end to end (resize, VAE encode, UNet,
  VAE decode): median of ``--runs`` runs after warm-up, with the prompt cached
  and with the text-encoder pass, plus the text encoder alone. Variants: bf16 /
  fp16 with fused LoRA and SDPA attention; unfused LoRA; plain (non-SDPA)
  attention; ``channels_last``; ``torch.compile`` (mode ``--compile-mode``).
* ``tiled_*``: ``4 * size``² output with tiling (bf16, fused): peak memory and time.
* ``degradation``: Real-ESRGAN degradation of 16 × ``size``² images, on the device
  and on the CPU (images/s).
* ``metrics``: PSNR, SSIM and LPIPS-VGG throughput on the device (images/s).
* ``dist_train``: ``tools/dist_train.sh configs/icmsr_tiny.py 1`` for a few
  iterations (the device's collective backend: NCCL on CUDA).
"""
import argparse
import fnmatch
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: name -> (kind, parameters). Order = run order.
TRAIN_VARIANTS = {
    'fp32': dict(frozen=None, amp=None, ckpt=False, optimizer='AdamW', share=True),
    'bf16': dict(frozen='bfloat16', amp='bfloat16', ckpt=False, optimizer='AdamW', share=True),
    'bf16_ckpt': dict(frozen='bfloat16', amp='bfloat16', ckpt=True, optimizer='AdamW', share=True),
    'bf16_ckpt_8bit': dict(frozen='bfloat16', amp='bfloat16', ckpt=True, optimizer='AdamW8bit',
                           share=True),
    'naive_fp32': dict(frozen=None, amp=None, ckpt=False, optimizer='AdamW', share=False),
}
INFER_VARIANTS = {
    'bf16_fused': dict(dtype='bfloat16', fuse=True),
    'fp16_fused': dict(dtype='float16', fuse=True),
    'bf16_unfused': dict(dtype='bfloat16', fuse=False),
    'bf16_fused_no_sdpa': dict(dtype='bfloat16', fuse=True, sdpa=False),
    'bf16_fused_channels_last': dict(dtype='bfloat16', fuse=True, channels_last=True),
    'bf16_fused_compile': dict(dtype='bfloat16', fuse=True, compile=True),
}


def plan(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The cases of this run, most important first, with their timeouts.

    Args:
        args: Parsed command line.

    Returns:
        ``[{'name', 'kind', 'params', 'timeout'}, ...]``.
    """
    gpu = args.device.startswith('cuda')
    t_train, t_infer, t_compile, t_other = ((90, 60, 240, 90) if gpu else (120, 60, 180, 120))
    train = lambda v, b: dict(name=f'train_{v}_b{b}', kind='train',  # noqa: E731
                              params=dict(TRAIN_VARIANTS[v], batch=b), timeout=t_train)
    infer = lambda v: dict(name=f'infer_{v}', kind='infer',  # noqa: E731
                           params=dict(INFER_VARIANTS[v]),
                           timeout=t_compile if INFER_VARIANTS[v].get('compile') else t_infer)
    b_small, b_large = args.batches
    # The savers without the optional bitsandbytes first: the targets do not hang on it.
    cases = [train('bf16_ckpt', b_large), train('bf16_ckpt', b_small),
             infer('bf16_fused'),
             dict(name='tiled_bf16_fused', kind='tiled', params=dict(dtype='bfloat16'),
                  timeout=t_other),
             train('fp32', b_small), train('naive_fp32', b_small),
             train('bf16_ckpt_8bit', b_large), train('bf16_ckpt_8bit', b_small),
             train('bf16', b_large), train('fp32', b_large), train('bf16', b_small),
             infer('fp16_fused'), infer('bf16_unfused'), infer('bf16_fused_no_sdpa'),
             infer('bf16_fused_channels_last'), infer('bf16_fused_compile'),
             dict(name='degradation', kind='degradation', params={}, timeout=t_other),
             dict(name='metrics', kind='metrics', params={}, timeout=t_other),
             dict(name='dist_train', kind='dist_train', params={}, timeout=t_other)]
    if b_small == b_large:  # one batch size: drop the duplicates
        seen = set()
        cases = [c for c in cases if not (c['name'] in seen or seen.add(c['name']))]
    if args.cases:
        cases = [c for c in cases if any(fnmatch.fnmatchcase(c['name'], pattern)
                                         for pattern in args.cases)]
    return cases


# ----------------------------------------------------------------------------- driver
def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON through a temporary file in the same folder (never half-written).

    The driver uses the standard library only (not ``icmsr.utils.atomic_io``): it must run and
    report on a device machine where ``icmsr`` itself may fail to import.

    Args:
        path: Destination file.
        data: JSON-serialisable object.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + osp.basename(path), suffix='.tmp')
    with os.fdopen(fd, 'w') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def environment(args: argparse.Namespace) -> Dict[str, Any]:
    """Versions, device name and the missing optional modules of this machine."""
    import importlib.util

    import torch
    info: Dict[str, Any] = dict(python=sys.version.split()[0], torch=torch.__version__,
                                device=args.device, arch=args.arch, size=args.size)
    if args.device.startswith('cuda') and torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    modules = ('diffusers', 'transformers', 'mmengine', 'mmcv', 'basicsr', 'lpips', 'pyiqa',
               'bitsandbytes', 'cv2', 'scipy', 'PIL', 'yaml')
    info['missing_modules'] = [m for m in modules if importlib.util.find_spec(m) is None]
    return info


def run_case(case: Dict[str, Any], args: argparse.Namespace, timeout: float) -> Dict[str, Any]:
    """Run one case in a fresh interpreter with a time limit; return its result row."""
    cmd = [sys.executable, osp.abspath(__file__), '--worker', case['name']] + args.forward
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get(
        'PYTHONPATH')])))
    row: Dict[str, Any] = dict(case=case['name'], kind=case['kind'])
    start = time.perf_counter()
    # Own process group: a timeout also ends what the case started (torchrun workers,
    # compile workers), so the next case gets a free device.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        row.update(status='timeout', error=f'no result within {timeout:.0f} s')
    else:
        lines = [ln for ln in stdout.splitlines() if ln.startswith('{"result"')]
        if proc.returncode == 0 and lines:
            row.update(status='ok', **json.loads(lines[-1])['result'])
        else:
            tail = (stderr or stdout).strip().splitlines()[-3:]
            row.update(status='error', error=' | '.join(tail)[-600:])
    row['case_wall_s'] = round(time.perf_counter() - start, 1)
    return row


def _fmt(value: Any) -> str:
    return '-' if value is None else str(value)


def print_table(rows: List[Dict[str, Any]]) -> None:
    """Print one line per case and the ratios the targets are judged by."""
    print(f'\n{"case":<28} {"status":<8} {"peak alloc GiB":>14} {"reserved":>9} '
          f'{"peak RSS":>9}  figures')
    for r in rows:
        figures = {k: v for k, v in r.items() if k not in (
            'case', 'kind', 'status', 'peak_alloc_gib', 'peak_reserved_gib', 'peak_rss_gib',
            'case_wall_s', 'error')}
        detail = r.get('error') if r['status'] != 'ok' else ', '.join(
            f'{k}={v}' for k, v in figures.items())
        print(f'{r["case"]:<28} {r["status"]:<8} {_fmt(r.get("peak_alloc_gib")):>14} '
              f'{_fmt(r.get("peak_reserved_gib")):>9} {_fmt(r.get("peak_rss_gib")):>9}  {detail}')
    ok = {r['case']: r for r in rows if r['status'] == 'ok'}
    key = 'peak_alloc_gib' if any('peak_alloc_gib' in r for r in ok.values()) else 'peak_rss_gib'
    for batch in sorted({c.rsplit('_b', 1)[1] for c in ok if c.startswith('train_')}):
        shared, naive = ok.get(f'train_fp32_b{batch}'), ok.get(f'train_naive_fp32_b{batch}')
        if shared and naive and naive.get(key):
            print(f'shared/naive {key} at batch {batch}: {shared[key] / naive[key]:.2f}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command line; ``args.forward`` holds the options a worker needs."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda', help="'cuda' (default) or 'cpu' (smoke run)")
    p.add_argument('--size', type=int, default=512, help='training crop and inference output side')
    p.add_argument('--arch', choices=['sd14', 'tiny'], default='sd14')
    p.add_argument('--batches', type=int, nargs=2, default=[1, 4], metavar=('SMALL', 'LARGE'))
    p.add_argument('--train-steps', type=int, default=5, help='timed train steps')
    p.add_argument('--train-warmup', type=int, default=2)
    p.add_argument('--runs', type=int, default=20, help='timed inference runs')
    p.add_argument('--warmup', type=int, default=3, help='inference warm-up runs')
    p.add_argument('--degradation-runs', type=int, default=10)
    p.add_argument('--dist-iters', type=int, default=5)
    p.add_argument('--compile-mode', default='default',
                   help='torch.compile mode of the compile case (inductor)')
    p.add_argument('--compile-backend', default='inductor',
                   help="torch.compile backend ('eager' checks the graph capture only)")
    p.add_argument('--budget', type=float, default=470,
                   help='seconds for the whole suite; cases that no longer fit are skipped')
    p.add_argument('--case-timeout', type=float, default=None,
                   help='seconds per case, replacing every case\'s own limit')
    p.add_argument('--cases', nargs='+', metavar='PATTERN',
                   help="run only these cases (names or shell patterns, e.g. 'train_*_b4')")
    p.add_argument('--out', default=osp.join(ROOT, 'work_dirs', 'gpu_suite', 'results.json'))
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.forward = ['--device', args.device, '--size', str(args.size), '--arch', args.arch,
                    '--batches', *map(str, args.batches), '--train-steps', str(args.train_steps),
                    '--train-warmup', str(args.train_warmup), '--runs', str(args.runs),
                    '--warmup', str(args.warmup), '--degradation-runs', str(args.degradation_runs),
                    '--dist-iters', str(args.dist_iters), '--compile-mode', args.compile_mode,
                    '--compile-backend', args.compile_backend]
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the suite (or, with ``--worker``, one case in this process)."""
    args = parse_args(argv)
    if args.worker:
        import warnings
        warnings.simplefilter('ignore')
        from icmsr.utils.setup_env import register_all_modules
        register_all_modules()
        case = {c['name']: c for c in plan(args)}[args.worker]
        from gpu_cases import CASES  # next to this file, on sys.path when run as a script
        result = CASES[case['kind']](args, **case['params'])
        print(json.dumps(dict(result=result)), flush=True)
        return 0
    start = time.perf_counter()
    report: Dict[str, Any] = dict(environment=environment(args), command=sys.argv, rows=[])
    write_json_atomic(args.out, report)
    print(json.dumps(report['environment']), flush=True)
    for case in plan(args):
        left = args.budget - (time.perf_counter() - start)
        if left < 10:
            row = dict(case=case['name'], kind=case['kind'], status='skipped',
                       error=f'suite budget of {args.budget:.0f} s spent')
        else:
            limit = case['timeout'] if args.case_timeout is None else args.case_timeout
            row = run_case(case, args, min(limit, left))
        report['rows'].append(row)
        write_json_atomic(args.out, report)  # a cut-off run keeps every finished case
        print(json.dumps(row), flush=True)
    print_table(report['rows'])
    print(f'\nresults: {args.out} ({time.perf_counter() - start:.0f} s)')
    return 0 if all(r['status'] == 'ok' for r in report['rows']) else 1


if __name__ == '__main__':
    sys.exit(main())
