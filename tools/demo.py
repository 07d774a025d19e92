"""End-to-end demo on 2 CPU cores with nothing downloaded: train, test and run the tiny model.

``python tools/demo.py [--work-dir DIR]`` (or ``bash tools/demo.sh``):

1. writes the training images (scikit-image's sample photos, 128 px) and a small
   synthetic paired test set (seed 0, GT 128 px, LQ 32 px) under ``DIR/data``;
2. ``tools/train.py configs/icmsr_tiny.py`` (a few hundred iterations);
3. ``tools/test.py`` on the last checkpoint (PSNR, SSIM, NIQE);
4. ``tools/infer.py`` on the test set's LQ images;

and prints where the checkpoint, the metrics and the images are. Each step runs
the real command-line tool in a subprocess, exactly as a user would.
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# MMEngine log records; their continuation lines (config dump, environment) are not shown.
_LOG_LINE = re.compile(r'^\d\d/\d\d \d\d:\d\d:\d\d - mmengine - ')
_HIDDEN = ('Config:', 'System environment', 'Hooks will be executed', 'FileClient',
           'HardDiskBackend', 'Using env variable')
CONFIG = osp.join(ROOT, 'configs', 'icmsr_tiny.py')


def parse_args() -> argparse.Namespace:
    """Parse the command line.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='ICM-SR tiny end-to-end demo (CPU, offline)')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'icmsr_tiny'),
                        help='where data, checkpoints, logs, metrics and images go')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config\'s)')
    parser.add_argument('--prepare-only', action='store_true',
                        help='only write the demo data and exit')
    return parser.parse_args()


def prepare_data(data_root: str) -> Dict[str, str]:
    """Write the tiny training folder and the synthetic paired test set.

    Args:
        data_root: Folder that ``configs/icmsr_tiny.py`` reads (``ICMSR_TINY_DATA``).

    Returns:
        ``train`` and ``test`` folders.
    """
    from demo_data import make_synthetic_paired_set, skimage_training_images
    train_dir, test_dir = osp.join(data_root, 'train'), osp.join(data_root, 'test')
    skimage_training_images(train_dir, size=128)
    make_synthetic_paired_set(test_dir, num_images=4, gt_size=128, scale=4, seed=0)
    return dict(train=train_dir, test=test_dir)


def _shown(line: str) -> bool:
    """Whether a line of an MMEngine tool goes to the terminal (all go to the log file)."""
    if 'Traceback' in line or 'Error' in line:
        return True
    return bool(_LOG_LINE.match(line)) and not any(h in line for h in _HIDDEN)


def run_step(name: str, cmd: List[str], env: Dict[str, str], log_path: str,
             quiet: bool = True) -> float:
    """Run one tool, streaming its output to a log file and (filtered) to the terminal.

    Args:
        name: Step name for messages.
        cmd: Command line.
        env: Environment.
        log_path: File that receives the step's full output.
        quiet: Show only MMEngine's log records, not the config dump.

    Returns:
        Wall time of the step in seconds.

    Raises:
        SystemExit: When the step fails (its log is named).
    """
    print(f'\n[demo] {name}: {" ".join(cmd)}', flush=True)
    start = time.perf_counter()
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if _shown(line) if quiet else not line.startswith('  warnings.warn'):
                sys.stdout.write(line)
        proc.wait()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f'[demo] {name} failed (exit {proc.returncode}); see {log_path}')
    print(f'[demo] {name} done in {seconds:.0f} s', flush=True)
    return seconds


def main() -> None:
    """Run the demo and print a summary of its outputs."""
    args = parse_args()
    work_dir = osp.abspath(args.work_dir)
    data_root = osp.join(work_dir, 'data')
    os.makedirs(work_dir, exist_ok=True)
    start = time.perf_counter()
    folders = prepare_data(data_root)
    print(f'[demo] data: {folders["train"]} (train), {folders["test"]} (test)')
    if args.prepare_only:
        return
    env = dict(os.environ, ICMSR_TINY_DATA=data_root, PYTHONUNBUFFERED='1')
    # One thread: the tiny model's convolutions gain nothing from more, and OpenMP
    # threads competing for busy cores slow them down by an order of magnitude.
    env.setdefault('OMP_NUM_THREADS', '1')
    py = sys.executable
    times = {}
    train_cmd = [py, 'tools/train.py', CONFIG, '--work-dir', work_dir]
    if args.iters is not None:
        train_cmd += ['--cfg-options', f'train_cfg.max_iters={args.iters}',
                      f'train_cfg.val_interval={args.iters}',
                      f'param_scheduler.0.end={args.iters}', f'param_scheduler.0.T_max={args.iters}']
    times['train'] = run_step('train', train_cmd, env, osp.join(work_dir, 'demo_train.log'))

    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    metrics_path = osp.join(work_dir, 'test_metrics.json')
    times['test'] = run_step(
        'test', [py, 'tools/test.py', CONFIG, ckpt, '--work-dir', work_dir, '--out', metrics_path],
        env, osp.join(work_dir, 'demo_test.log'))

    sr_dir = osp.join(work_dir, 'sr')
    times['infer'] = run_step(
        'infer', [py, 'tools/infer.py', '--config', CONFIG, '--weights', ckpt, '--input',
                  osp.join(folders['test'], 'test_LR'), '--output', sr_dir, '--device', 'cpu'],
        env, osp.join(work_dir, 'demo_infer.log'), quiet=False)

    with open(metrics_path) as f:
        metrics = json.load(f)
    total = time.perf_counter() - start
    print('\n[demo] ================= summary =================')
    print(f'[demo] checkpoint : {ckpt}')
    print(f'[demo] metrics    : {metrics_path}')
    for key, value in metrics.items():
        print(f'[demo]     {key:<20} {value:.4f}' if isinstance(value, float)
              else f'[demo]     {key:<20} {value}')
    print(f'[demo] reports    : {osp.join(work_dir, "<timestamp>", "metrics")} (per-image CSV, table)')
    print(f'[demo] SR images  : {sr_dir}')
    print(f'[demo] train grids: {osp.join(work_dir, "<timestamp>", "vis_data", "vis_image")}')
    print(f'[demo] logs       : {work_dir}/demo_{{train,test,infer}}.log')
    print('[demo] wall time  : ' + ', '.join(f'{k} {v:.0f} s' for k, v in times.items())
          + f', total {total:.0f} s')


if __name__ == '__main__':
    main()
