"""Score SR images of any method against GT folders, or merge reports into one table.

Examples::

    # OSEDiff's released RealSR outputs, PSNR/SSIM/NIQE only
    python tools/eval_folder.py --pred results_osediff --gt RealSR/test_HR \\
        --datasets RealSR --name OSEDiff --metrics psnr ssim niqe --out work_dirs/eval

    # three sets in one call (pred/gt/datasets pair up in order)
    python tools/eval_folder.py --pred out/div2k out/realsr out/drealsr \\
        --gt DIV2K_val/gt RealSR/test_HR DRealSR/test_HR \\
        --datasets DIV2K-Val RealSR DRealSR --name MyMethod --weights /data/metric_weights

    # merge several runs into the paper's table
    python tools/eval_folder.py --merge work_dirs/eval/OSEDiff/summary.json \\
        work_dirs/test/metrics/summary.json --table-out table.md

Outputs under ``OUT/NAME/``: ``DATASET/per_image.csv``, ``DATASET/summary.json``,
``DATASET/cache.jsonl`` (per-image cache; a restarted run skips scored images),
and ``summary.json`` + ``table.md`` over all sets of the call.

A file that cannot be read, or a pair whose sizes differ, is reported with its
path and counted; the run goes on, and the exit code is 1 at the end. Reports
carry the number of images each row was scored on; a row scored on fewer images
than another of its dataset is never bold.
"""
import argparse
import os
import sys
from typing import List, Optional

from icmsr.evaluation.reports import (load_summaries, make_summary, markdown_table, write_json,
                                     write_table)
from icmsr.evaluation.scorers import DEFAULT_METRICS, canonical_name
from icmsr.evaluation.weights import check_weights_available
from icmsr.user_errors import add_debug_flag, check_input_exists, check_output_folder, run_tool


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The parsed arguments.
    """
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pred', nargs='+', help='folder(s) of SR images')
    p.add_argument('--gt', nargs='+', help='GT folder(s), one per --pred')
    p.add_argument('--datasets', nargs='+',
                   help='test-set name(s), one per --pred (default: GT folder names)')
    p.add_argument('--metrics', nargs='+', default=DEFAULT_METRICS,
                   help=f'metrics (default: all: {" ".join(DEFAULT_METRICS)})')
    p.add_argument('--out', default='work_dirs/eval', help='report folder (default %(default)s)')
    p.add_argument('--name', default=None, help='method name (default: first --pred folder name)')
    p.add_argument('--weights', default=None,
                   help='offline metric weights folder (default: $ICMSR_METRIC_WEIGHTS)')
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if any)')
    p.add_argument('--crop-border', type=int, default=0,
                   help='pixels cropped at each edge for PSNR/SSIM (default 0, as OSEDiff)')
    p.add_argument('--no-progress', action='store_true', help='hide the progress bars')
    p.add_argument('--strict', action='store_true',
                   help='fail when a GT image has no prediction (default: warn and skip it)')
    p.add_argument('--merge', nargs='+', metavar='JSON',
                   help='merge these summary JSONs into one Markdown table and exit')
    p.add_argument('--table-out', default=None, help='with --merge: write the table here')
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.merge:
        return args
    if not args.pred:
        p.error('give --pred (and --gt), or --merge')
    if args.gt and len(args.gt) != len(args.pred):
        p.error(f'{len(args.pred)} --pred folder(s) but {len(args.gt)} --gt folder(s)')
    if args.datasets and len(args.datasets) != len(args.pred):
        p.error(f'{len(args.pred)} --pred folder(s) but {len(args.datasets)} --datasets name(s)')
    try:
        args.metrics = list(dict.fromkeys(canonical_name(m) for m in args.metrics))
    except KeyError as err:
        p.error(str(err.args[0]))
    return args


def _dataset_name(gt: Optional[str], pred: str) -> str:
    folder = os.path.normpath(gt or pred)
    name = os.path.basename(folder)
    # StableSR layout: <set>/test_HR -> use <set>.
    if name.lower() in ('test_hr', 'hr', 'gt', 'test_gt'):
        name = os.path.basename(os.path.dirname(folder)) or name
    return name


def main(argv: Optional[List[str]] = None) -> int:
    """Run the evaluation (or the merge) described by the command line.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Process exit code.
    """
    args = parse_args(argv)
    if args.merge:
        for path in args.merge:
            check_input_exists(path, '--merge')
        table = markdown_table(load_summaries(args.merge))
        if args.table_out:
            write_table(args.table_out, table)
        print(table)
        return 0
    from icmsr.evaluation.folder_eval import evaluate_folder
    for flag, folders in (('--pred', args.pred), ('--gt', args.gt or [])):
        for folder in folders:
            check_input_exists(folder, flag)
    # Every metric's weights, FID included, before the first image is scored.
    check_weights_available(args.metrics, args.weights)
    method = args.name or os.path.basename(os.path.normpath(args.pred[0]))
    check_output_folder(args.out, '--out')
    out_dir = os.path.join(args.out, method)
    gts = args.gt or [None] * len(args.pred)
    names = args.datasets or [_dataset_name(g, p) for p, g in zip(args.pred, gts)]
    options = {m: {'crop_border': args.crop_border} for m in ('psnr', 'ssim')
               if m in args.metrics and args.crop_border}
    datasets, scorers, failed = {}, None, 0
    for pred, gt, name in zip(args.pred, gts, names):
        try:
            res = evaluate_folder(pred, gt, out_dir, name, args.metrics, method, args.weights,
                                  args.device, options, scorers, progress=not args.no_progress,
                                  strict=args.strict)
        except ValueError as err:  # --strict, or nothing pairs up
            print(f'[{name}] error: {err}', file=sys.stderr)
            failed += 1
            continue
        scorers = res['scorers']
        for side, keys in res['unpaired'].items():
            if keys:
                print(f'[{name}] {len(keys)} image(s) {side.replace("_", " ")} skipped, '
                      f'e.g. {keys[:3]}', file=sys.stderr)
        for path, reason in res['errors']:
            print(f'[{name}] error: {path}: {reason}', file=sys.stderr)
        if res['errors']:
            print(f'[{name}] {len(res["errors"])} of {res["num_expected"]} image(s) failed and '
                  f'are not in the means ({res["num_images"]} scored)', file=sys.stderr)
            failed += 1
        datasets[name] = {k: res[k] for k in ('num_images', 'num_expected', 'num_errors',
                                              'metrics')}
    if datasets:
        summary = make_summary(method, datasets, {'metric_options': options})
        write_json(os.path.join(out_dir, 'summary.json'), summary)
        table = markdown_table([summary])
        write_table(os.path.join(out_dir, 'table.md'), table)
        print(table)
        print(f'reports written to {out_dir}')
    if failed:
        print(f'{failed} set(s) had errors (see above); exit code 1', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
