"""Pack a pipeline's results into the dataset-item contract of docs/architecture.md."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform

from icmsr.registry import TRANSFORMS
from icmsr.structures import SRDataSample

META_KEYS = ('key', 'gt_path', 'lq_path', 'prompt')


@TRANSFORMS.register_module()
class PackSRInputs(BaseTransform):
    """Build ``{'inputs': {'gt': T, 'lq': T}, 'data_samples': SRDataSample}``.

    Each present image of ``keys`` becomes a contiguous ``uint8`` tensor
    ``(3, H, W)`` RGB; absent keys are left out of ``inputs`` (an HQ training
    item has no ``'lq'``, an LQ-only item no ``'gt'``). The data sample's
    metainfo is exactly ``key``, ``gt_path``, ``lq_path`` (None when absent) and
    ``prompt`` ('' when absent).

    Args:
        keys: Image keys to pack.
    """

    def __init__(self, keys: Sequence[str] = ('gt', 'lq')) -> None:
        self.keys = tuple(keys)

    def transform(self, results: dict) -> dict:
        """Pack one item.

        Args:
            results: Item dict with ``uint8`` ``(H, W, 3)`` images and meta fields.

        Returns:
            The packed item.
        """
        inputs = {}
        for k in self.keys:
            if k not in results:
                continue
            image = results[k]
            if not (isinstance(image, np.ndarray) and image.dtype == np.uint8
                    and image.ndim == 3 and image.shape[2] == 3):
                raise TypeError(
                    f"PackSRInputs: results[{k!r}] of item {results.get('key')!r} must be a "
                    f'uint8 (H, W, 3) array, got {type(image).__name__} '
                    f"{getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}.")
            inputs[k] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not inputs:
            raise KeyError(f'PackSRInputs: none of {self.keys} in results; load images first.')
        meta = {k: results.get(k) for k in META_KEYS}
        if meta['prompt'] is None:
            meta['prompt'] = ''
        return {'inputs': inputs, 'data_samples': SRDataSample(metainfo=meta)}

    def __repr__(self) -> str:
        return f'{type(self).__name__}(keys={self.keys})'
