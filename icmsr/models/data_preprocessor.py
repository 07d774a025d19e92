"""Batch preparation: stacking and [0, 1] floats on the model's device."""
from typing import Any, Dict, Optional, Sequence, Union

import torch
from mmengine.model import BaseDataPreprocessor

from icmsr.registry import MODELS


def _stack(images: Union[torch.Tensor, Sequence[torch.Tensor], None]) -> Optional[torch.Tensor]:
    if images is None:
        return None
    batch = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
    if batch.dtype == torch.uint8:
        return batch.float() / 255.0
    return batch.float()


@MODELS.register_module()
class SRDataPreprocessor(BaseDataPreprocessor):
    """Turn a collated batch into float32 ``gt``/``lq`` batches in ``[0, 1]`` on the device.

    What happens next is the model's business: :class:`~icmsr.models.OneStepSR`
    resizes the LQ to the output size inside ``super_resolve``;
    :class:`~icmsr.models.ICMSR` degrades HQ-only training batches and extracts
    the teacher's condition (``ICMSR.training_inputs``).
    """

    def forward(self, data: Dict[str, Any], training: bool = False) -> Dict[str, Any]:
        """Prepare one batch.

        Args:
            data: ``{'inputs': {'gt': [...], 'lq': [...]}, 'data_samples': [...]}``.
            training: unused (the same stacking serves training and testing).

        Returns:
            ``{'inputs': {'gt', 'lq'}, 'data_samples'}``; a missing image kind is None.
        """
        data = self.cast_data(data)
        inputs = data['inputs']
        gt = _stack(inputs.get('gt'))
        lq = _stack(inputs.get('lq'))
        if gt is None and lq is None:
            raise KeyError("SRDataPreprocessor: batch inputs need 'gt' and/or 'lq' images.")
        return {'inputs': {'gt': gt, 'lq': lq}, 'data_samples': data.get('data_samples')}
