"""Evaluation reports: per-image CSV, JSON summary, and the paper's Markdown table.

A summary JSON holds one method on one or more datasets::

    {"method": "ICM-SR",
     "datasets": {"RealSR": {"num_images": 100,
                             "metrics": {"psnr": 25.15, "ssim": 0.734, ...}}},
     "settings": {...}}

Several summaries (runs of ``tools/test.py`` or ``tools/eval_folder.py``) merge
into one table with datasets as row groups, methods as rows, the number of
images each row was scored on, an arrow on each metric for its better direction
and the best value of each dataset in bold. Only rows scored on as many images
as the most complete row of their dataset compete for bold: a method evaluated
on 9 of 100 images is shown, with its count, but never ranked. Every report is
written atomically (:mod:`icmsr.utils.atomic_io`).
"""
import csv
import json
import math
import warnings
from typing import Dict, Iterable, List, Optional, Sequence

from icmsr.utils.atomic_io import atomic_write, atomic_write_json, atomic_write_text
from .scorers import METRIC_INFO

# Decimals as the paper prints them.
_DECIMALS = {'fid': 2, 'musiq': 2, 'psnr': 2}


def ordered_metrics(names: Iterable[str]) -> List[str]:
    """Sort metric keys in the paper's column order (unknown keys last, as given).

    Args:
        names: Metric keys.

    Returns:
        The keys in table order, without duplicates.
    """
    names = list(dict.fromkeys(names))
    known = [m for m in METRIC_INFO if m in names]
    return known + [n for n in names if n not in METRIC_INFO]


def mean_scores(rows: Sequence[Dict], metrics: Sequence[str]) -> Dict[str, float]:
    """Average per-image values, ignoring images without a value for a metric.

    Args:
        rows: Per-image dicts with a ``key`` and metric values.
        metrics: The metrics to average.

    Returns:
        Metric key to mean (metrics with no value at all are left out).
    """
    out = {}
    for m in metrics:
        vals = [float(r[m]) for r in rows if r.get(m) is not None]
        if vals:
            out[m] = sum(vals) / len(vals)
    return out


def write_per_image_csv(path: str, rows: Sequence[Dict], metrics: Sequence[str]) -> None:
    """Write one line per image (sorted by key) with every metric value.

    Args:
        path: Output ``.csv`` file.
        rows: Per-image dicts with ``key``.
        metrics: Column order.
    """
    with atomic_write(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['key'] + list(metrics))
        for row in sorted(rows, key=lambda r: r['key']):
            writer.writerow([row['key']] + [
                '' if row.get(m) is None else f'{float(row[m]):.6f}' for m in metrics])


def make_summary(method: str, datasets: Dict[str, Dict], settings: Optional[Dict] = None) -> Dict:
    """Build the summary dict of one method.

    Args:
        method: Method name shown in the table.
        datasets: ``{name: {'num_images': int, 'metrics': {key: value}}}``.
        settings: Free-form settings recorded with the numbers.

    Returns:
        The summary (see module docstring).
    """
    return {'method': method, 'datasets': datasets, 'settings': settings or {}}


def write_json(path: str, summary: Dict) -> None:
    """Write a summary JSON (indented, stable key order).

    Args:
        path: Output file.
        summary: From :func:`make_summary`.
    """
    atomic_write_json(path, summary, indent=2)


def write_table(path: str, table: str) -> None:
    """Write a Markdown table (atomically).

    Args:
        path: Output ``.md`` file.
        table: From :func:`markdown_table`.
    """
    atomic_write_text(path, table)


def load_summaries(paths: Sequence[str]) -> List[Dict]:
    """Read summary JSONs, checking they have the expected shape.

    Args:
        paths: JSON files.

    Returns:
        The summaries in the given order.

    Raises:
        ValueError: Naming a file that is not a summary.
    """
    out = []
    for p in paths:
        with open(p) as f:
            data = json.load(f)
        if not isinstance(data, dict) or 'method' not in data or 'datasets' not in data:
            raise ValueError(f'{p} is not an icmsr summary JSON (needs "method" and "datasets")')
        out.append(data)
    return out


def _fmt(metric: str, value: Optional[float]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return f'{value:.{_DECIMALS.get(metric, 4)}f}'


def markdown_table(summaries: Sequence[Dict], metrics: Optional[Sequence[str]] = None,
                   dataset_order: Optional[Sequence[str]] = None) -> str:
    """Render summaries as the paper's table: datasets x methods, best in bold.

    Args:
        summaries: Summary dicts; one method may appear in several (e.g. one
            run per dataset); a later (method, dataset) entry replaces an earlier one.
        metrics: Columns; default every metric found, in the paper's order.
        dataset_order: Row-group order; default order of first appearance.

    Returns:
        A GitHub-flavoured Markdown table.
    """
    table: Dict[str, Dict[str, Dict]] = {}  # dataset -> method -> entry
    for s in summaries:
        for dset, entry in s['datasets'].items():
            methods = table.setdefault(dset, {})
            if s['method'] in methods:
                warnings.warn(f'{s["method"]} on {dset} appears twice; keeping the last one')
            methods[s['method']] = entry
    if metrics is None:
        metrics = ordered_metrics(m for d in table.values() for e in d.values()
                                  for m in e.get('metrics', {}))
    dsets = list(dataset_order or []) + [d for d in table if d not in (dataset_order or [])]

    def header(m: str) -> str:
        info = METRIC_INFO.get(m)
        if info is None:
            return m
        return info.label + ('↓' if info.lower_better else '↑')

    lines = ['| Datasets | Methods | Images | ' + ' | '.join(header(m) for m in metrics) + ' |',
             '|' + '---|' * (len(metrics) + 3)]
    for dset in dsets:
        entries = table.get(dset, {})
        counts = {k: e.get('num_images') for k, e in entries.items()}
        known = [c for c in counts.values() if c is not None]
        # Rows scored on fewer images than the most complete one never compete.
        ranked = [k for k, c in counts.items() if not known or c == max(known)]
        best = {}
        for m in metrics:
            vals = [entries[k]['metrics'][m] for k in ranked
                    if entries[k].get('metrics', {}).get(m) is not None]
            if len(vals) > 1:  # bold only means something with a comparison
                lower = METRIC_INFO[m].lower_better if m in METRIC_INFO else False
                best[m] = _fmt(m, min(vals) if lower else max(vals))
        for i, (method, entry) in enumerate(entries.items()):
            vals = entry.get('metrics', {})
            cells = [_count(entry)]
            for m in metrics:
                text = _fmt(m, vals.get(m))
                bold = method in ranked and best.get(m) == text and text != '-'
                cells.append(f'**{text}**' if bold else text)
            lines.append(f'| {dset if i == 0 else ""} | {method} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _count(entry: Dict) -> str:
    """Image-count cell: ``100``, or ``9 of 100`` when images were expected but not scored."""
    n, expected = entry.get('num_images'), entry.get('num_expected')
    if n is None:
        return '-'
    return f'{n} of {expected}' if expected is not None and expected != n else str(n)
