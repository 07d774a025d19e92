"""End-to-end demo on 2 CPU cores with nothing downloaded: train, test and run the tiny model.

``python tools/demo.py [--work-dir DIR]`` (or ``bash tools/demo.sh``):

1. writes the training images (scikit-image's sample photos, 128 px) and a small
   synthetic paired test set (seed 0, GT 128 px, LQ 32 px) under ``DIR/data``;
2. ``tools/train.py configs/icmsr_tiny_base.py`` (a few hundred iterations): the
   ICM-SR step on the tiny pretrained base that ships in ``configs/tiny_base``;
3. ``tools/test.py`` on the last checkpoint (PSNR, SSIM, NIQE);
4. ``tools/infer.py`` on the test set's LQ images, with the trained checkpoint and
   with the untrained model (step 0: the base alone, LoRA still zero);
5. scores both, bicubic upsampling and the frozen VAE's own reconstruction of the
   GT with the toolkit's folder evaluation, prints them as one table and writes
   ``DIR/comparison.png`` (a row per test image, a column per table row, then the GT);

and prints where the checkpoint, the metrics and the images are. Each model step
runs the real command-line tool in a subprocess, exactly as a user would.
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
CONFIG = osp.join(ROOT, 'configs', 'icmsr_tiny_base.py')
TABLE_METRICS = ('psnr', 'ssim')


def parse_args() -> argparse.Namespace:
    """Parse the command line.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='ICM-SR tiny end-to-end demo (CPU, offline)')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'icmsr_tiny_base'),
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


def write_bicubic(lq_dir: str, gt_dir: str, out_dir: str) -> str:
    """Upsample every LQ image to its GT's size with OpenCV's bicubic filter.

    Args:
        lq_dir: LQ folder.
        gt_dir: GT folder (same file names).
        out_dir: Output folder (created).

    Returns:
        ``out_dir``.
    """
    import cv2

    from icmsr.fileio.file_lists import scan_images
    from icmsr.fileio.image_io import load_image_rgb
    from icmsr.utils.atomic_io import atomic_save_image
    for name in scan_images(lq_dir, recursive=False):
        h, w = load_image_rgb(osp.join(gt_dir, name)).shape[:2]
        up = cv2.resize(load_image_rgb(osp.join(lq_dir, name)), (w, h),
                        interpolation=cv2.INTER_CUBIC)
        atomic_save_image(osp.join(out_dir, name), up)
    return out_dir


def write_vae_reconstruction(gt_dir: str, out_dir: str) -> str:
    """Encode and decode every GT image with the config's frozen VAE.

    The generator decodes with this frozen VAE, so its reconstruction of the GT
    itself is about the best any model trained on the base can reach.

    Args:
        gt_dir: GT folder.
        out_dir: Output folder (created).

    Returns:
        ``out_dir``.
    """
    import numpy as np
    import torch
    from mmengine.config import Config

    from icmsr.fileio.file_lists import scan_images
    from icmsr.fileio.image_io import load_image_rgb
    from icmsr.registry import MODELS
    from icmsr.utils.setup_env import register_all_modules
    from icmsr.utils.atomic_io import atomic_save_image
    register_all_modules()
    vae = MODELS.build(Config.fromfile(CONFIG).model.vae).eval()
    for name in scan_images(gt_dir, recursive=False):
        image = load_image_rgb(osp.join(gt_dir, name))
        gt = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        with torch.no_grad():
            z = vae.encode(gt.float() / 127.5 - 1).latent_dist.mode()
            rec = ((vae.decode(z).sample[0] + 1) * 127.5).clamp(0, 255).round()
        atomic_save_image(osp.join(out_dir, name), rec.permute(1, 2, 0).to(torch.uint8).numpy())
    return out_dir


def score_table(rows: Dict[str, str], gt_dir: str, report_dir: str) -> List[str]:
    """Score each prediction folder against the GT (``tools/eval_folder.py``'s code).

    Args:
        rows: ``{row label: prediction folder}``.
        gt_dir: GT folder.
        report_dir: where the per-image reports go (one sub-folder per row).

    Returns:
        The table's lines.
    """
    from icmsr.evaluation.folder_eval import evaluate_folder
    lines = [f'{"":<30}' + ''.join(f'{m.upper():>9}' for m in TABLE_METRICS)]
    scorers = None
    for i, (label, pred_dir) in enumerate(rows.items()):
        result = evaluate_folder(pred_dir, gt_dir, osp.join(report_dir, f'row{i}'), 'synthetic',
                                 TABLE_METRICS, method=label, device='cpu', scorers=scorers,
                                 progress=False, strict=True)
        scorers = result['scorers']
        lines.append(f'{label:<30}' + ''.join(f'{result["metrics"][m]:>9.4f}'
                                              for m in TABLE_METRICS))
    return lines


def write_comparison(rows: Dict[str, str], gt_dir: str, path: str) -> str:
    """One labelled picture: a row per test image, a column per method, then the GT.

    Args:
        rows: ``{label: prediction folder}`` (file names as in ``gt_dir``).
        gt_dir: GT folder.
        path: The PNG to write.

    Returns:
        ``path``.
    """
    import numpy as np
    import torch

    from icmsr.fileio.file_lists import scan_images
    from icmsr.fileio.image_io import load_image_rgb
    from icmsr.engine.visualization_hook import sr_grid
    from icmsr.utils.atomic_io import atomic_save_image
    names = scan_images(gt_dir, recursive=False)
    folders = list(rows.values()) + [gt_dir]

    def batch(folder: str) -> torch.Tensor:
        images = [np.array(load_image_rgb(osp.join(folder, n))) for n in names]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255

    grid = sr_grid([batch(f) for f in folders], len(names),
                   labels=[label.split(' (')[0] for label in rows] + ['GT'])
    atomic_save_image(path, grid)
    return path


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

    lq_dir, gt_dir = osp.join(folders['test'], 'test_LR'), osp.join(folders['test'], 'test_HR')
    sr_dir, step0_dir = osp.join(work_dir, 'sr'), osp.join(work_dir, 'sr_step0')
    infer = [py, 'tools/infer.py', '--config', CONFIG, '--input', lq_dir, '--device', 'cpu']
    times['infer'] = run_step('infer', infer + ['--weights', ckpt, '--output', sr_dir],
                              env, osp.join(work_dir, 'demo_infer.log'), quiet=False)
    # No weights: the model as training starts it (zero LoRA), i.e. the base alone.
    times['infer step 0'] = run_step(
        'infer step 0', infer + ['--allow-untrained', '--output', step0_dir], env,
        osp.join(work_dir, 'demo_infer_step0.log'), quiet=False)
    iters = re.search(r'(\d+)\.pth$', ckpt)
    rows = {'bicubic': write_bicubic(lq_dir, gt_dir, osp.join(work_dir, 'bicubic')),
            'untrained (step 0)': step0_dir,
            f'trained ({iters.group(1) if iters else "?"} iterations)': sr_dir,
            'VAE(GT) (the ceiling)': write_vae_reconstruction(
                gt_dir, osp.join(work_dir, 'vae_gt'))}
    table = score_table(rows, gt_dir, osp.join(work_dir, 'demo_scores'))
    comparison = write_comparison(rows, gt_dir, osp.join(work_dir, 'comparison.png'))

    with open(metrics_path) as f:
        metrics = json.load(f)
    total = time.perf_counter() - start
    print('\n[demo] ================= summary =================')
    print('[demo] model      : ICM-SR LoRA on a tiny SD-like base pretrained for minutes on a few '
          'sample photos (configs/tiny_base); it shows training working, not real-SR quality')
    from icmsr.fileio.file_lists import scan_images  # the toolkit's one folder lister
    num_pairs = len(scan_images(gt_dir, recursive=False))
    print(f'[demo] test set   : {num_pairs} synthetic x4 pairs ({gt_dir}); PSNR/SSIM on Y')
    for line in table:
        print(f'[demo]     {line}')
    print("[demo]     (VAE(GT): the frozen tiny VAE's own reconstruction of the GT, about the "
          'best this base allows)')
    print(f'[demo] checkpoint : {ckpt}')
    print(f'[demo] metrics    : {metrics_path} (tools/test.py)')
    for key, value in metrics.items():
        print(f'[demo]     {key:<20} {value:.4f}' if isinstance(value, float)
              else f'[demo]     {key:<20} {value}')
    print(f'[demo] reports    : {osp.join(work_dir, "<timestamp>", "metrics")} (per-image CSV, table)')
    print(f'[demo] comparison : {comparison} (one row per test image: the table\'s columns, GT)')
    print(f'[demo] SR images  : {sr_dir} (trained), {step0_dir} (step 0), '
          f'{rows["bicubic"]}, {rows["VAE(GT) (the ceiling)"]}')
    print(f'[demo] train grids: {osp.join(work_dir, "<timestamp>", "vis_data", "vis_image")}')
    print(f'[demo] logs       : {work_dir}/demo_{{train,test,infer,infer_step0}}.log')
    print('[demo] wall time  : ' + ', '.join(f'{k} {v:.0f} s' for k, v in times.items())
          + f', total {total:.0f} s')


if __name__ == '__main__':
    main()
