"""The per-image record that travels from datasets through models to metrics."""
from mmengine.structures import BaseDataElement


class SRDataSample(BaseDataElement):
    """One image's annotations and results.

    Meta fields (set by the datasets, read-only afterwards):
        key (str): file stem used to pair LQ/GT and to name outputs.
        gt_path (str | None), lq_path (str | None): source files.
        prompt (str): text prompt for this image ('' for none).

    Data fields (set by models):
        pred_img (Tensor): SR output, float32 ``(3, H, W)`` in ``[0, 1]``, on CPU.
        gt_img (Tensor): ground truth, float32 ``(3, H, W)`` in ``[0, 1]``, when known.
    """
