"""Evaluation reports: per-image CSV, JSON summary, and the paper's Markdown table.

A summary JSON holds one method on one or more datasets::

    {"method": "ICM-SR",
     "datasets": {"RealSR": {"num_images": 100,
                             "metrics": {"psnr": 25.15, "ssim": 0.734, ...}}},
     "settings": {...}}

Several summaries (runs of ``tools/test.py`` or ``tools/eval_folder.py``) merge
into one table with datasets as row groups, methods as rows, an arrow on each
metric for its better direction and the best value of each dataset in bold.
"""
import csv
import json
import math
import os
import warnings
from typing import Dict, Iterable, List, Optional, Sequence

from .scorers import METRICS

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
    known = [m for m in METRICS if m in names]
    return known + [n for n in names if n not in METRICS]


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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(summary, f, indent=2)


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
    table: Dict[str, Dict[str, Dict[str, float]]] = {}  # dataset -> method -> metrics
    for s in summaries:
        for dset, entry in s['datasets'].items():
            methods = table.setdefault(dset, {})
            if s['method'] in methods:
                warnings.warn(f'{s["method"]} on {dset} appears twice; keeping the last one')
            methods[s['method']] = entry.get('metrics', {})
    if metrics is None:
        metrics = ordered_metrics(m for d in table.values() for v in d.values() for m in v)
    dsets = list(dataset_order or []) + [d for d in table if d not in (dataset_order or [])]

    def header(m: str) -> str:
        info = METRICS.get(m)
        if info is None:
            return m
        return info.label + ('↓' if info.lower_better else '↑')

    lines = ['| Datasets | Methods | ' + ' | '.join(header(m) for m in metrics) + ' |',
             '|' + '---|' * (len(metrics) + 2)]
    for dset in dsets:
        methods = table.get(dset, {})
        best = {}
        for m in metrics:
            vals = [v[m] for v in methods.values() if v.get(m) is not None]
            if len(vals) > 1:  # bold only means something with a comparison
                lower = METRICS[m].lower_better if m in METRICS else False
                best[m] = _fmt(m, min(vals) if lower else max(vals))
        for i, (method, vals) in enumerate(methods.items()):
            cells = []
            for m in metrics:
                text = _fmt(m, vals.get(m))
                cells.append(f'**{text}**' if best.get(m) == text and text != '-' else text)
            lines.append(f'| {dset if i == 0 else ""} | {method} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'
