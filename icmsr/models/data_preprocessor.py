"""Batch preparation: stacking, [0, 1] floats, on-device degradation and conditions."""
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseDataPreprocessor

from icmsr.registry import MODELS


def _stack(images: Union[torch.Tensor, Sequence[torch.Tensor], None]) -> Optional[torch.Tensor]:
    if images is None:
        return None
    batch = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
    if batch.dtype == torch.uint8:
        return batch.float() / 255.0
    return batch.float()


def resize_to(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking), clamped to ``[0, 1]``.

    Args:
        img: ``(B, C, h, w)``.
        size: ``(H, W)``.

    Returns:
        ``(B, C, H, W)``; the input itself when already that size.
    """
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    shrink = size[0] < img.shape[-2]
    return F.interpolate(img, size=tuple(size), mode='bicubic', align_corners=False,
                         antialias=shrink).clamp(0, 1)


@MODELS.register_module()
class SRDataPreprocessor(BaseDataPreprocessor):
    """Turn a collated batch into model inputs (see docs/architecture.md, step 2).

    Training on HQ-only batches runs ``degradation`` (``RealESRGANDegradation``)
    on the GT batch on the batch's device and ``condition`` (``ConditionExtractor``)
    on the (possibly USM-sharpened) GT. Batches that carry an LQ (paired sets) use
    it as is. The LQ is resized (bicubic) to the GT size, or by ``scale`` when
    there is no GT, because the one-step generator works at the output size.

    Args:
        degradation: config (or module) of the GT -> LQ degradation; None means
            training batches must carry their own LQ.
        condition: config (or module) of the structural-condition extractor; None
            gives ``cond=None`` (text-only OSEDiff).
        scale: upscaling factor used when a batch has no GT.
        condition_at_test: also compute conditions in val/test (for analysis).
    """

    def __init__(self, degradation: Optional[Any] = None, condition: Optional[Any] = None,
                 scale: int = 4, condition_at_test: bool = False) -> None:
        super().__init__()
        self.degradation = MODELS.build(degradation) if isinstance(degradation, dict) \
            else degradation
        self.condition = MODELS.build(condition) if isinstance(condition, dict) else condition
        self.scale = int(scale)
        self.condition_at_test = condition_at_test

    def forward(self, data: Dict[str, Any], training: bool = False) -> Dict[str, Any]:
        """Prepare one batch.

        Args:
            data: ``{'inputs': {'gt': [...], 'lq': [...]}, 'data_samples': [...]}``.
            training: degrade and extract conditions when True.

        Returns:
            ``{'inputs': {'gt', 'lq', 'cond'}, 'data_samples'}`` with float32
            tensors in ``[0, 1]`` on the device; ``gt`` may be None at test time.
        """
        data = self.cast_data(data)
        inputs = data['inputs']
        gt = _stack(inputs.get('gt'))
        lq = _stack(inputs.get('lq'))
        if gt is None and lq is None:
            raise KeyError("SRDataPreprocessor: batch inputs need 'gt' and/or 'lq' images.")
        if training and lq is None:
            if self.degradation is None:
                raise ValueError('SRDataPreprocessor: a training batch without LQ needs '
                                 "degradation=dict(type='RealESRGANDegradation', ...).")
            out = self.degradation(gt)
            # With resize_back=True the degradation already resized the LQ back with a
            # random mode (OSEDiff's augmentation); otherwise bicubic below, as at test time.
            gt, lq = out['gt'], out.get('lq_up', out['lq'])
        if gt is not None:
            lq = resize_to(lq, gt.shape[-2:])
        else:
            lq = resize_to(lq, (lq.shape[-2] * self.scale, lq.shape[-1] * self.scale))
        cond = None
        if self.condition is not None and gt is not None and (training or self.condition_at_test):
            cond = self.condition(gt, lq)
        return {'inputs': {'gt': gt, 'lq': lq, 'cond': cond},
                'data_samples': data.get('data_samples')}
