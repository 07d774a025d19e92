"""Score a folder of SR images against a GT folder (any method's outputs).

Pairs files by name stem, scores every pair with the same scorers as
:class:`~icmsr.evaluation.IQAMetrics`, and keeps a per-image cache so an
interrupted run, started again, only scores the images it has not scored yet.
Only image files directly inside the folders are read (the toolkit's one lister,
:func:`icmsr.fileio.file_lists.scan_images`, with its hidden-file rule), and
never anything under the output folder (which may sit inside the prediction
folder). Images are read with the toolkit's one reader,
:func:`icmsr.fileio.image_io.load_image_rgb` (EXIF orientation, 16-bit,
grayscale, palette ...), exactly as the datasets read them.

One bad file never stops a run: a prediction or GT that cannot be read, or a
pair whose sizes differ, is recorded as a per-file error (path and reason),
left out of the means, and counted in the result, so the caller can report it
and exit non-zero at the end.
"""
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from icmsr.fileio.file_lists import scan_images
from icmsr.fileio.image_io import ImageLoadError, load_image_rgb
from icmsr.utils.atomic_io import atomic_write
from .fid import compute_fid
from .reports import make_summary, mean_scores, write_json, write_per_image_csv
from .scorers import METRIC_INFO, build_scorers
from .weights import check_weights_available

CACHE_NAME = 'cache.jsonl'
#: Recorded with cached scores: a cache written by another reader is not reused.
READER = 'icmsr load_image_rgb uint8'


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
    out: Dict[str, str] = {}
    for name in scan_images(folder, recursive=False, exclude=exclude):
        stem = os.path.splitext(name)[0]
        if stem in out:
            raise ValueError(f'Two images named {stem!r} in {folder}: '
                             f'{os.path.basename(out[stem])} and {name}')
        out[stem] = os.path.join(folder, name)
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
    """Read an image as RGB float32 ``(3, H, W)`` in ``[0, 1]`` with the toolkit's reader.

    Args:
        path: Image file.

    Returns:
        The image tensor (``load_image_rgb`` / 255).

    Raises:
        ImageLoadError: Naming the file, when it cannot be decoded.
    """
    arr = load_image_rgb(path).astype('float32') / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _file_stamp(path: str) -> List:
    st = os.stat(path)
    return [st.st_size, int(st.st_mtime_ns)]


class ScoreCache:
    """Per-image score cache (one JSON object per line), rewritten atomically.

    A line is trusted only while the prediction file keeps its size and
    modification time and the metric settings are unchanged. The file is
    replaced as a whole (:func:`~icmsr.utils.atomic_io.atomic_write`) at most
    every ``save_every`` seconds and on :meth:`close`, so an interruption keeps
    every score saved so far and never leaves a cut line.

    Args:
        path: The ``.jsonl`` file.
        settings: Metric settings; a cache written with other settings is ignored.
        save_every: Seconds between two rewrites while scoring.
    """

    def __init__(self, path: str, settings: Dict, save_every: float = 5.0) -> None:
        self.path = path
        self.settings = json.loads(json.dumps(settings))
        self.save_every = save_every
        self.rows: Dict[str, Dict] = {}
        if os.path.isfile(path):
            with open(path) as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # written by an older, appending version
                        continue
                    if row.get('settings') == self.settings:
                        self.rows.setdefault(row['key'], {}).update(row)
        self._dirty = False
        self._saved_at = time.monotonic()

    def get(self, key: str, pred_path: str, metrics: Sequence[str]) -> Optional[Dict]:
        """Cached scores of ``key`` if complete and still valid, else None."""
        row = self.rows.get(key)
        if row is None or row.get('stamp') != _file_stamp(pred_path):
            return None
        if any(m not in row for m in metrics):
            return None
        return {m: row[m] for m in metrics}

    def put(self, key: str, pred_path: str, scores: Dict[str, float]) -> None:
        """Record scores of one image (saved within ``save_every`` seconds)."""
        row = {'key': key, 'stamp': _file_stamp(pred_path), 'settings': self.settings, **scores}
        self.rows.setdefault(key, {}).update(row)
        self._dirty = True
        if time.monotonic() - self._saved_at >= self.save_every:
            self.save()

    def save(self) -> None:
        """Replace the cache file with every row recorded so far."""
        if not self._dirty:
            return
        with atomic_write(self.path, 'w') as f:
            for key in sorted(self.rows):
                f.write(json.dumps(self.rows[key]) + '\n')
        self._dirty = False
        self._saved_at = time.monotonic()

    def close(self) -> None:
        """Save what is not saved yet."""
        self.save()


def _score_pair(key: str, pred_path: str, gt_path: Optional[str], per_image: Sequence[str],
                scorers: Dict) -> Dict[str, float]:
    """Read one pair with the toolkit's reader and score it.

    Raises:
        ImageLoadError: A file cannot be read (names it).
        ValueError: Prediction and GT differ in size (names both).
    """
    pred = read_image(pred_path)[None]
    gt = read_image(gt_path)[None] if gt_path else None
    if gt is not None and gt.shape != pred.shape:
        raise ValueError(f'size mismatch: {pred_path} is {tuple(pred.shape[-2:])} (H, W), '
                         f'{gt_path} is {tuple(gt.shape[-2:])}')
    return {m: scorers[m](pred, gt)[0] for m in per_image}


def evaluate_folder(pred_dir: str, gt_dir: Optional[str], out_dir: str, dataset: str,
                    metrics: Sequence[str], method: str = 'method',
                    weights_dir: Optional[str] = None, device: Optional[str] = None,
                    metric_options: Optional[Dict] = None, scorers: Optional[Dict] = None,
                    progress: bool = True, strict: bool = False) -> Dict:
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
        strict: Require a prediction for every GT image.

    Returns:
        ``{'num_images': scored, 'num_expected': pairs (or GT images with strict),
        'metrics': {key: mean}, 'unpaired': {...}, 'errors': [(path, reason)],
        'rows': [...], 'scorers': ...}``.

    Raises:
        ValueError: A full-reference metric without GT, no pair at all, or with
            ``strict`` a GT image without prediction.
        MetricWeightsError: Before anything is scored, when metric weights are missing.
    """
    from tqdm import tqdm
    metrics = list(metrics)
    if gt_dir is None:
        fr = [m for m in metrics if METRIC_INFO[m].full_reference]
        if fr:
            raise ValueError(f'{fr} need a GT folder (--gt)')
    set_dir = os.path.join(out_dir, dataset)
    pairs, extra = pair_folders(pred_dir, gt_dir, exclude=[out_dir])
    if strict and extra['gt_only']:
        raise ValueError(
            f'--strict: {len(extra["gt_only"])} GT image(s) of {gt_dir} have no prediction in '
            f'{pred_dir}: {extra["gt_only"][:10]}')
    per_image = [m for m in metrics if not METRIC_INFO[m].set_level]
    if scorers is None:
        check_weights_available(metrics, weights_dir)  # FID too, before any scoring
    settings = {'metric_options': metric_options or {}, 'reader': READER}
    cache = ScoreCache(os.path.join(set_dir, CACHE_NAME), settings)
    rows, errors, good = [], [], []
    try:
        todo = [(k, p, g) for k, p, g in pairs if cache.get(k, p, per_image) is None]
        if todo and per_image and scorers is None:
            scorers = build_scorers(per_image, device, weights_dir, metric_options)
        bar = tqdm(pairs, desc=f'{method} on {dataset}', unit='img', disable=not progress)
        for key, pred_path, gt_path in bar:
            scores = cache.get(key, pred_path, per_image)
            if scores is None:
                try:
                    scores = _score_pair(key, pred_path, gt_path, per_image, scorers)
                except (ImageLoadError, ValueError) as err:
                    errors.append((getattr(err, 'path', pred_path), str(err)))
                    continue
                cache.put(key, pred_path, scores)
            elif 'fid' in metrics:  # FID reads the files: check the cached pair still reads
                try:
                    _score_pair(key, pred_path, gt_path, [], {})
                except (ImageLoadError, ValueError) as err:
                    errors.append((getattr(err, 'path', pred_path), str(err)))
                    continue
            rows.append({'key': key, **scores})
            good.append((pred_path, gt_path))
    finally:
        cache.close()
    means = mean_scores(rows, per_image)
    if 'fid' in metrics and good:
        means['fid'] = compute_fid([p for p, _ in good], [g for _, g in good], device, weights_dir)
    means = {m: means[m] for m in metrics if m in means}
    write_per_image_csv(os.path.join(set_dir, 'per_image.csv'), rows, per_image)
    expected = len(pairs) + (len(extra['gt_only']) if strict else 0)
    entry = {'num_images': len(rows), 'num_expected': expected, 'num_errors': len(errors),
             'metrics': means}
    write_json(os.path.join(set_dir, 'summary.json'),
               make_summary(method, {dataset: entry}, dict(settings, pred_dir=pred_dir,
                                                           gt_dir=gt_dir)))
    return dict(entry, unpaired=extra, errors=errors, rows=rows, scorers=scorers)
