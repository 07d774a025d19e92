"""Score a folder of SR images against a GT folder (any method's outputs).

Pairs files by name stem, scores every pair with the same scorers as
:class:`~icmsr.evaluation.IQAMetrics`, and keeps a per-image cache so an
interrupted run, started again, only scores the images it has not scored yet.
Only image files directly inside the folders are read, and never anything under
the output folder (which may sit inside the prediction folder).
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .fid import compute_fid
from .reports import make_summary, mean_scores, write_json, write_per_image_csv
from .scorers import METRICS, build_scorers

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
CACHE_NAME = 'cache.jsonl'


def list_images(folder: str, exclude: Sequence[str] = ()) -> Dict[str, str]:
    """Map name stem to path for the image files directly inside ``folder``.

    Args:
        folder: Folder to list (not recursive).
        exclude: Folders whose files are never listed (e.g. our own output).

    Returns:
        ``{stem: path}``.

    Raises:
        FileNotFoundError: If ``folder`` is not a directory.
        ValueError: If two images share a stem (``a.png`` and ``a.jpg``).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'Not a folder: {folder}')
    excluded = [os.path.realpath(e) + os.sep for e in exclude]
    out: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        real = os.path.realpath(path)
        if (not name.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isfile(path)
                or any(real.startswith(e) for e in excluded)):
            continue
        stem = os.path.splitext(name)[0]
        if stem in out:
            raise ValueError(f'Two images named {stem!r} in {folder}: '
                             f'{os.path.basename(out[stem])} and {name}')
        out[stem] = path
    return out


def pair_folders(pred_dir: str, gt_dir: Optional[str],
                 exclude: Sequence[str] = ()) -> Tuple[List[Tuple[str, str, Optional[str]]], Dict]:
    """Pair prediction and GT images by stem.

    Args:
        pred_dir: SR images.
        gt_dir: GT images, or None for no-reference scoring only.
        exclude: Folders never listed.

    Returns:
        ``[(key, pred_path, gt_path | None)]`` sorted by key, and counts of
        unpaired files ``{'pred_only': [...], 'gt_only': [...]}``.

    Raises:
        ValueError: If no image pairs up.
    """
    preds = list_images(pred_dir, exclude)
    if gt_dir is None:
        return [(k, p, None) for k, p in sorted(preds.items())], {'pred_only': [], 'gt_only': []}
    gts = list_images(gt_dir, exclude)
    keys = sorted(set(preds) & set(gts))
    if not keys:
        raise ValueError(f'No image of {pred_dir} ({len(preds)} images) has a GT with the same '
                         f'name stem in {gt_dir} ({len(gts)} images)')
    extra = {'pred_only': sorted(set(preds) - set(gts)), 'gt_only': sorted(set(gts) - set(preds))}
    return [(k, preds[k], gts[k]) for k in keys], extra


def read_image(path: str) -> torch.Tensor:
    """Read an image as RGB float32 ``(3, H, W)`` in ``[0, 1]`` (as pyiqa reads files).

    Args:
        path: Image file.

    Returns:
        The image tensor.
    """
    from PIL import Image
    with Image.open(path) as img:
        arr = np.asarray(img.convert('RGB'), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _file_stamp(path: str) -> List:
    st = os.stat(path)
    return [st.st_size, int(st.st_mtime_ns)]


class ScoreCache:
    """Append-only per-image score cache (one JSON object per line).

    A line is trusted only while the prediction file keeps its size and
    modification time and the metric settings are unchanged.

    Args:
        path: The ``.jsonl`` file.
        settings: Metric settings; a cache written with other settings is ignored.
    """

    def __init__(self, path: str, settings: Dict) -> None:
        self.path = path
        self.settings = json.loads(json.dumps(settings))
        self.rows: Dict[str, Dict] = {}
        if os.path.isfile(path):
            with open(path) as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by an interruption
                        continue
                    if row.get('settings') == self.settings:
                        self.rows.setdefault(row['key'], {}).update(row)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, 'a')

    def get(self, key: str, pred_path: str, metrics: Sequence[str]) -> Optional[Dict]:
        """Cached scores of ``key`` if complete and still valid, else None."""
        row = self.rows.get(key)
        if row is None or row.get('stamp') != _file_stamp(pred_path):
            return None
        if any(m not in row for m in metrics):
            return None
        return {m: row[m] for m in metrics}

    def put(self, key: str, pred_path: str, scores: Dict[str, float]) -> None:
        """Record scores of one image and flush, so an interruption keeps them."""
        row = {'key': key, 'stamp': _file_stamp(pred_path), 'settings': self.settings, **scores}
        self.rows.setdefault(key, {}).update(row)
        self._file.write(json.dumps(row) + '\n')
        self._file.flush()

    def close(self) -> None:
        """Close the cache file."""
        self._file.close()


def evaluate_folder(pred_dir: str, gt_dir: Optional[str], out_dir: str, dataset: str,
                    metrics: Sequence[str], method: str = 'method',
                    weights_dir: Optional[str] = None, device: Optional[str] = None,
                    metric_options: Optional[Dict] = None, scorers: Optional[Dict] = None,
                    progress: bool = True) -> Dict:
    """Score one prediction folder against its GT folder and write the reports.

    Args:
        pred_dir: SR images.
        gt_dir: GT images (None: no-reference metrics only).
        out_dir: Report folder for this method; files go to ``out_dir/dataset/``.
        dataset: Test-set name in the reports.
        metrics: Metric keys.
        method: Method name in the reports.
        weights_dir: Offline weights folder.
        device: Device of the metric networks.
        metric_options: Per-metric option overrides.
        scorers: Already built scorers (reused across sets).
        progress: Show a progress bar with ETA.

    Returns:
        ``{'num_images': n, 'metrics': {key: mean}, 'unpaired': {...}, 'rows': [...]}``.
    """
    from tqdm import tqdm
    metrics = list(metrics)
    if gt_dir is None:
        fr = [m for m in metrics if METRICS[m].full_reference]
        if fr:
            raise ValueError(f'{fr} need a GT folder (--gt)')
    set_dir = os.path.join(out_dir, dataset)
    pairs, extra = pair_folders(pred_dir, gt_dir, exclude=[out_dir])
    per_image = [m for m in metrics if not METRICS[m].set_level]
    settings = {'metric_options': metric_options or {}, 'reader': 'PIL RGB uint8'}
    cache = ScoreCache(os.path.join(set_dir, CACHE_NAME), settings)
    rows = []
    try:
        todo = [(k, p, g) for k, p, g in pairs if cache.get(k, p, per_image) is None]
        if todo and per_image and scorers is None:
            scorers = build_scorers(per_image, device, weights_dir, metric_options)
        bar = tqdm(pairs, desc=f'{method} on {dataset}', unit='img', disable=not progress,
                   initial=0)
        for key, pred_path, gt_path in bar:
            scores = cache.get(key, pred_path, per_image)
            if scores is None:
                pred = read_image(pred_path)[None]
                gt = read_image(gt_path)[None] if gt_path else None
                if gt is not None and gt.shape != pred.shape:
                    raise ValueError(f'{key}: {pred_path} is {tuple(pred.shape[-2:])}, '
                                     f'{gt_path} is {tuple(gt.shape[-2:])}')
                scores = {m: scorers[m](pred, gt)[0] for m in per_image}
                cache.put(key, pred_path, scores)
            rows.append({'key': key, **scores})
    finally:
        cache.close()
    means = mean_scores(rows, per_image)
    if 'fid' in metrics:
        means['fid'] = compute_fid([p for _, p, _ in pairs], [g for _, _, g in pairs],
                                   device, weights_dir)
    means = {m: means[m] for m in metrics if m in means}
    write_per_image_csv(os.path.join(set_dir, 'per_image.csv'), rows, per_image)
    entry = {'num_images': len(pairs), 'metrics': means}
    write_json(os.path.join(set_dir, 'summary.json'),
               make_summary(method, {dataset: entry}, dict(settings, pred_dir=pred_dir,
                                                           gt_dir=gt_dir)))
    return dict(entry, unpaired=extra, rows=rows, scorers=scorers)
