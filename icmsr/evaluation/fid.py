"""Set-level FID between exactly the given SR and GT files (clean-fid "clean" mode).

pyiqa's FID scans folders. To score exactly the paired files of a test set (and
never a report, a cache or an unpaired extra image lying next to them), both file
lists are linked into fresh temporary folders which pyiqa then scans.
"""
import os
import shutil
import tempfile
from typing import Optional, Sequence

import torch

from .weights import (check_weights_available, create_pyiqa_metric, offline_pyiqa,
                      resolve_weights_dir)


def _link_all(files: Sequence[str], folder: str) -> None:
    """Link (or copy, where links are not allowed) files under unique names."""
    for i, src in enumerate(files):
        dst = os.path.join(folder, f'{i:06d}{os.path.splitext(src)[1].lower()}')
        try:
            os.symlink(os.path.abspath(src), dst)
        except OSError:
            shutil.copyfile(src, dst)


def compute_fid(sr_files: Sequence[str], gt_files: Sequence[str],
                device: Optional[str] = None, weights_dir: Optional[str] = None,
                batch_size: int = 8, num_workers: int = 0) -> float:
    """FID between two image sets with pyiqa's clean-mode Inception features.

    Args:
        sr_files: SR image files.
        gt_files: GT image files (the reference distribution).
        device: Device; default CUDA when available.
        weights_dir: Offline weights folder; default ``$ICMSR_METRIC_WEIGHTS``.
        batch_size: Inception batch size.
        num_workers: Data-loading workers for the resize step.

    Returns:
        The FID value.

    Raises:
        ValueError: If either list is empty.
        MetricWeightsError: If the Inception weights are missing offline.
    """
    if not sr_files or not gt_files:
        raise ValueError(f'FID needs images on both sides (got {len(sr_files)} SR, '
                         f'{len(gt_files)} GT)')
    weights_dir = resolve_weights_dir(weights_dir)
    check_weights_available(['fid'], weights_dir)
    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    with offline_pyiqa(weights_dir, ['fid']):
        model = create_pyiqa_metric('fid', 'fid', dev, weights_dir)
    with tempfile.TemporaryDirectory(prefix='icmsr_fid_') as tmp:
        sr_dir, gt_dir = os.path.join(tmp, 'sr'), os.path.join(tmp, 'gt')
        os.makedirs(sr_dir)
        os.makedirs(gt_dir)
        _link_all(sr_files, sr_dir)
        _link_all(gt_files, gt_dir)
        value = model(sr_dir, gt_dir, mode='clean', batch_size=batch_size,
                      num_workers=num_workers, verbose=False)
    return float(value)
