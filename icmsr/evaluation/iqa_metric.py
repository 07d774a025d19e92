"""``IQAMetrics``: every image-quality metric of the paper's tables in one BaseMetric.

One class takes a list of metric names rather than one class per metric because
the metrics share all of their work around the scoring: reading ``pred_img`` and
``gt_img``, 8-bit quantisation, saving the SR image (FID and later re-scoring need
the files), one per-image record with every value, and one report per test set.
Eleven evaluators over the same samples would repeat that eleven times and
scatter a set's numbers over eleven records.
"""
import os
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.structures import BaseDataElement

from icmsr.registry import METRICS as METRIC_REGISTRY
from .fid import compute_fid
from icmsr.utils.atomic_io import atomic_save_image
from .reports import (make_summary, markdown_table, mean_scores, ordered_metrics,
                      write_json, write_per_image_csv, write_table)
from .scorers import (DEFAULT_METRICS, METRIC_INFO, build_scorers, canonical_name, quantize)
from .weights import check_weights_available, resolve_weights_dir


def _save_png(img: torch.Tensor, path: str) -> None:
    """Save a ``(3, H, W)`` float image in ``[0, 1]`` as an 8-bit RGB PNG."""
    arr = (img.detach().float().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    atomic_save_image(path, np.ascontiguousarray(arr))


@METRIC_REGISTRY.register_module()
class IQAMetrics(BaseMetric):
    """Full-reference and no-reference IQA metrics of one test set.

    Reads ``pred_img`` and ``gt_img`` (float32 ``(3, H, W)`` in ``[0, 1]``) and
    ``metainfo['key']`` of each data sample. Per-image metrics are scored as the
    batches arrive; FID is computed once per set at the end between the saved SR
    images and the GT files. Results are averaged and returned as
    ``{prefix}/{LABEL}``, e.g. ``RealSR/PSNR``.

    Files written under ``{out_dir}/{prefix}/``: ``sr/{key}.png`` (the scored SR
    images), ``per_image.csv``, ``summary.json`` and ``table.md``.

    Args:
        metric_names: Metric names, default all eleven of the paper's Table 1
            (``lpips dists fid niqe musiq maniqa clipiqa topiq_nr liqe psnr ssim``).
            Not called ``metrics``: MMEngine's ``Runner.build_evaluator`` reads a
            config dict with a ``metrics`` key as an ``Evaluator`` config.
        prefix: Test-set name, used in metric keys and reports.
        method: Method name used in the reports.
        out_dir: Report/image folder. None: the test loop sets its log dir; a
            temporary folder is used when nothing sets it.
        quantize: Round SR and GT to 8 bits before scoring, so the numbers equal
            those of the saved PNGs (as a folder evaluation would get).
        save_images: Save SR PNGs (always on when FID is requested).
        weights_dir: Offline weights folder; default ``$ICMSR_METRIC_WEIGHTS``.
        device: Device for the metric networks; default CUDA when available.
        metric_options: Per-metric pyiqa overrides, e.g. ``dict(psnr=dict(crop_border=4))``.
        collect_device: See :class:`mmengine.evaluator.BaseMetric`.
    """

    default_prefix = 'test'

    def __init__(self, metric_names: Optional[Sequence[str]] = None, prefix: Optional[str] = None,
                 method: str = 'ICM-SR', out_dir: Optional[str] = None, quantize: bool = True,
                 save_images: bool = True, weights_dir: Optional[str] = None,
                 device: Optional[str] = None, metric_options: Optional[Dict[str, Dict]] = None,
                 collect_device: str = 'cpu') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metric_names = ordered_metrics(
            canonical_name(m) for m in (metric_names or DEFAULT_METRICS))
        self.method = method
        self.out_dir = out_dir
        self.quantize = quantize
        self.save_images = save_images or 'fid' in self.metric_names
        self.weights_dir = resolve_weights_dir(weights_dir)
        self.device = device
        self.metric_options = metric_options or {}
        if self.weights_dir is not None:  # a named folder must be complete: fail at build time
            check_weights_available(self.metric_names, self.weights_dir)
        self._scorers: Optional[Dict[str, Any]] = None
        self.last_summary: Optional[Dict] = None

    def check_weights(self) -> None:
        """Fail with one clear message when a metric's weights cannot be had (FID included).

        Without a weights folder, files missing from torch's cache are an error
        only offline (see :func:`~icmsr.evaluation.weights.check_weights_available`).
        The test loops call this before the first batch, so nothing is inferred
        or scored in vain.

        Raises:
            MetricWeightsError: Listing each missing file and its URL.
        """
        check_weights_available(self.metric_names, self.weights_dir)

    # -- folders -------------------------------------------------------------
    def set_default_out_dir(self, out_dir: str) -> None:
        """Use ``out_dir`` unless one was given in the config (called by the loops).

        Args:
            out_dir: Usually the runner's log dir.
        """
        if self.out_dir is None:
            self.out_dir = out_dir

    @property
    def set_dir(self) -> str:
        """Folder of this test set's images and reports."""
        if self.out_dir is None:
            self.out_dir = tempfile.mkdtemp(prefix='icmsr_eval_')
            warnings.warn(f'IQAMetrics got no out_dir; writing to {self.out_dir}')
        return os.path.join(self.out_dir, self.prefix)

    # -- BaseMetric API --------------------------------------------------------
    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        """Score one batch of model outputs and keep per-image records.

        Args:
            data_batch: The loader batch (unused; outputs carry what is needed).
            data_samples: ``SRDataSample`` objects or their ``to_dict()`` forms.
        """
        if self._scorers is None:
            self._scorers = build_scorers(self.metric_names, self.device, self.weights_dir,
                                          self.metric_options)
        samples = [s.to_dict() if isinstance(s, BaseDataElement) else s for s in data_samples]
        for s in samples:
            for field in ('pred_img', 'key'):
                if s.get(field) is None:
                    raise KeyError(f'IQAMetrics needs `{field}` in every data sample '
                                   f'(got fields {sorted(s)})')
        preds = [self._prep(s['pred_img']) for s in samples]
        gts = [self._prep(s['gt_img']) if s.get('gt_img') is not None else None for s in samples]
        rows = [{'key': s['key'], 'gt_path': s.get('gt_path')} for s in samples]
        need_gt = [m for m in self._scorers if METRIC_INFO[m].full_reference]
        if need_gt and any(g is None for g in gts):
            raise KeyError(f'{need_gt} need `gt_img` in every data sample; a sample of set '
                           f'{self.prefix!r} has none (use no-reference metrics for unpaired sets)')
        for i, (pred, gt) in enumerate(zip(preds, gts)):
            if gt is not None and gt.shape != pred.shape:
                raise ValueError(f'{rows[i]["key"]}: pred {tuple(pred.shape)} and gt '
                                 f'{tuple(gt.shape)} differ in size')
            for name, scorer in self._scorers.items():
                rows[i][name] = scorer(pred[None], None if gt is None else gt[None])[0]
        if self.save_images:
            os.makedirs(os.path.join(self.set_dir, 'sr'), exist_ok=True)
            for row, pred, gt in zip(rows, preds, gts):
                row['sr_path'] = os.path.join(self.set_dir, 'sr', f'{row["key"]}.png')
                _save_png(pred, row['sr_path'])
                if 'fid' in self.metric_names and not row['gt_path'] and gt is not None:
                    # No GT file known: FID uses the GT image as the model received it.
                    os.makedirs(os.path.join(self.set_dir, 'gt'), exist_ok=True)
                    row['gt_path'] = os.path.join(self.set_dir, 'gt', f'{row["key"]}.png')
                    _save_png(gt, row['gt_path'])
        self.results.extend(rows)

    def _prep(self, img: torch.Tensor) -> torch.Tensor:
        img = torch.as_tensor(img).detach().float().cpu()
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f'Expected a (3, H, W) image, got shape {tuple(img.shape)}')
        return quantize(img) if self.quantize else img.clamp(0, 1)

    def compute_metrics(self, results: List[Dict]) -> Dict[str, float]:
        """Average per-image values, compute FID, and write this set's reports.

        Args:
            results: Per-image records of every rank.

        Returns:
            ``{LABEL: value}`` (the prefix is added by BaseMetric).
        """
        keys = [r['key'] for r in results]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
            raise ValueError(f'Set {self.prefix!r} has duplicate keys {dup}; keys name the '
                             'saved images and must be unique')
        per_image = [m for m in self.metric_names if not METRIC_INFO[m].set_level]
        scores = mean_scores(results, per_image)
        if 'fid' in self.metric_names:
            gt_files = [r.get('gt_path') for r in results]
            if not all(gt_files):
                raise KeyError(f'FID on {self.prefix!r} needs GT files (metainfo gt_path) '
                               'or gt_img for every sample')
            scores['fid'] = compute_fid([r['sr_path'] for r in results], gt_files,
                                        self.device, self.weights_dir)
        scores = {m: scores[m] for m in self.metric_names if m in scores}
        self._write_reports(results, per_image, scores)
        return {METRIC_INFO[m].label: v for m, v in scores.items()}

    def _write_reports(self, results: List[Dict], per_image: List[str],
                       scores: Dict[str, float]) -> None:
        settings = {'quantize': self.quantize, 'metric_options': self.metric_options,
                    'niqe': 'pyiqa NIQE with basicsr niqe_pris_params',
                    'psnr_ssim': 'Y of YCbCr, crop_border 0 unless overridden'}
        summary = make_summary(self.method, {
            self.prefix: {'num_images': len(results), 'metrics': scores}}, settings)
        write_per_image_csv(os.path.join(self.set_dir, 'per_image.csv'), results, per_image)
        write_json(os.path.join(self.set_dir, 'summary.json'), summary)
        write_table(os.path.join(self.set_dir, 'table.md'), markdown_table([summary]))
        self.last_summary = summary
