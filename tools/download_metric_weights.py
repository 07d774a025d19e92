"""Fill an offline metric-weights folder (run it on a machine with internet).

::

    python tools/download_metric_weights.py --out /data/metric_weights          # all metrics
    python tools/download_metric_weights.py --out W --metrics lpips musiq      # some
    python tools/download_metric_weights.py --out W --dry-run                  # list only

Then copy the folder to the evaluation machine and point
``ICMSR_METRIC_WEIGHTS`` (or ``--weights`` / ``weights_dir=``) at it. The layout
is that of ``$TORCH_HOME``: ``hub/pyiqa``, ``hub/checkpoints``, ``hub/clip``
(see ``docs/evaluation.md``). MANIQA's timm backbone goes to the Hugging Face
cache instead (copy that too, or set ``HF_HOME`` alike on both machines).
"""
import argparse
import os
import shutil
import sys
import urllib.request
from typing import List, Optional

from icmsr.evaluation.scorers import DEFAULT_METRICS, canonical_name
from icmsr.evaluation.weights import HF_FILES, WeightFile, missing_hf_files, required_files


def plan(out_dir: str, metrics: List[str]) -> List[tuple]:
    """List what to fetch: ``(WeightFile, target path, already present)``.

    Args:
        out_dir: The weights folder.
        metrics: Metric keys.

    Returns:
        One tuple per needed file.
    """
    rows = []
    for wf in required_files(metrics):
        target = os.path.join(out_dir, wf.relpath)
        rows.append((wf, target, os.path.isfile(target)))
    return rows


def download(wf: WeightFile, target: str) -> None:
    """Download one file atomically (to ``.part``, then rename).

    Args:
        wf: The file to fetch.
        target: Where it goes.
    """
    os.makedirs(os.path.dirname(target), exist_ok=True)
    part = target + '.part'
    with urllib.request.urlopen(wf.url) as src, open(part, 'wb') as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    os.replace(part, target)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        0 when every file is present afterwards (or listed with --dry-run), else 1.
    """
    p = argparse.ArgumentParser(description='Download metric weights for offline evaluation')
    p.add_argument('--out', required=True, help='weights folder to fill')
    p.add_argument('--metrics', nargs='+', default=DEFAULT_METRICS,
                   help='metrics to fetch weights for (default: all)')
    p.add_argument('--dry-run', action='store_true', help='only list URLs and target paths')
    args = p.parse_args(argv)
    metrics = [canonical_name(m) for m in args.metrics]
    failed = 0
    missing_hf = ''.join(missing_hf_files(metrics))
    for repo, filename in [f for m in metrics for f in HF_FILES.get(m, [])]:
        present = f'{repo}/{filename} ' not in missing_hf
        state = 'present' if present else ('would fetch' if args.dry_run else 'fetching')
        print(f'[{state}] https://huggingface.co/{repo}/resolve/main/{filename}\n'
              '    -> the Hugging Face cache')
        if not (present or args.dry_run):
            try:
                from huggingface_hub import hf_hub_download
                hf_hub_download(repo, filename)
            except Exception as err:  # report every failure, keep going with the rest
                failed += 1
                print(f'    FAILED: {type(err).__name__}: {err}', file=sys.stderr)
    for wf, target, present in plan(args.out, metrics):
        state = 'present' if present else ('would fetch' if args.dry_run else 'fetching')
        print(f'[{state}] {wf.url}\n    -> {target}')
        if present or args.dry_run:
            continue
        try:
            download(wf, target)
        except Exception as err:  # report every failure, keep going with the rest
            failed += 1
            print(f'    FAILED: {type(err).__name__}: {err}', file=sys.stderr)
    if failed:
        print(f'{failed} file(s) could not be downloaded', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
