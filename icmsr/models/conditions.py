"""ConditionExtractor: the structural image condition F_c of ICM-SR.

ICM-SR conditions the teacher's manifold on sparse structure extracted from the
HQ image: an 8x8 colormap (upsampled back with nearest neighbours) and Canny
edges, fed to TencentARC's T2I-Adapters (inputs in ``[0, 1]``). The ``lq`` mode
is the dense condition of the paper's ICM-SR-lq ablation.
"""
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from icmsr.registry import MODELS

ConditionOutput = Union[torch.Tensor, List[torch.Tensor]]


@MODELS.register_module()
class ConditionExtractor(nn.Module):
    """Compute the structural condition ``F_c`` of a batch of HQ images.

    Outputs, for ``hq`` of shape ``(B, 3, H, W)`` (all float32, on ``hq``'s device):

    - ``'colormap'``: ``(B, 3, H, W)`` in ``[0, 1]``; the image resized to
      ``colormap_size`` (default 8x8) then back to ``(H, W)`` with nearest
      neighbours, i.e. constant blocks. ``colormap_resize='bicubic'``
      (default) is antialiased bicubic, which matches PIL's ``BICUBIC`` used by
      T2I-Adapter's colormap to within a few 8-bit levels; ``'area'`` is the
      box average (OpenCV's ``INTER_AREA``). Values are clamped to ``[0, 1]``.
    - ``'canny'``: ``(B, 1, H, W)`` with values in ``{0, 1}``; OpenCV's Canny
      (thresholds ``canny_low``, ``canny_high``, 3x3 Sobel, L1 gradient) on the
      8-bit image (``round(255 x)``), converted to gray as
      ``cv2.COLOR_RGB2GRAY`` does (``canny_input='gray'``) or, with
      ``canny_input='color'``, on the three channels (OpenCV then takes the
      strongest channel gradient, as T2I-Adapter's reference code does).
    - ``'multi'``: ``[colormap, canny]``, the inputs of a ``MultiAdapter``
      with adapters in that order.
    - ``'lq'``: the LQ batch (any size) resized to ``(H, W)`` with
      ``lq_resize`` (default bicubic, no antialiasing, like the resize-back of
      the training LQ), clamped to ``[0, 1]``, ``(B, 3, H, W)``.

    Canny runs on the CPU (OpenCV); the result is moved back to ``hq``'s device.

    Args:
        mode: One of ``'colormap'``, ``'canny'``, ``'multi'``, ``'lq'``.
        colormap_size: Size of the colormap grid, int or ``(h, w)``.
        colormap_resize: ``'bicubic'`` or ``'area'``.
        canny_low: Lower hysteresis threshold of Canny.
        canny_high: Upper hysteresis threshold of Canny.
        canny_input: ``'gray'`` or ``'color'``.
        lq_resize: Interpolation mode for ``'lq'`` (any ``F.interpolate`` mode).
    """

    MODES = ('colormap', 'canny', 'multi', 'lq')

    def __init__(self, mode: str = 'multi',
                 colormap_size: Union[int, Sequence[int]] = 8,
                 colormap_resize: str = 'bicubic',
                 canny_low: float = 100,
                 canny_high: float = 200,
                 canny_input: str = 'gray',
                 lq_resize: str = 'bicubic') -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f'ConditionExtractor mode must be one of {self.MODES}, got {mode!r}.')
        if colormap_resize not in ('bicubic', 'area'):
            raise ValueError(f"colormap_resize must be 'bicubic' or 'area', got {colormap_resize!r}.")
        if canny_input not in ('gray', 'color'):
            raise ValueError(f"canny_input must be 'gray' or 'color', got {canny_input!r}.")
        if not 0 <= canny_low <= canny_high:
            raise ValueError(f'need 0 <= canny_low <= canny_high, got {canny_low}, {canny_high}.')
        size = (colormap_size, colormap_size) if isinstance(colormap_size, int) else tuple(colormap_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f'colormap_size must be a positive int or (h, w), got {colormap_size}.')
        self.mode = mode
        self.colormap_size: Tuple[int, int] = (int(size[0]), int(size[1]))
        self.colormap_resize = colormap_resize
        self.canny_low = float(canny_low)
        self.canny_high = float(canny_high)
        self.canny_input = canny_input
        self.lq_resize = lq_resize

    @staticmethod
    def _check(x: torch.Tensor, name: str) -> None:
        """Raise a clear error unless ``x`` is a float ``(B, 3, H, W)`` tensor."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'ConditionExtractor expects {name} of shape (B, 3, H, W), got {shape}.')
        if not x.is_floating_point():
            raise TypeError(f'{name} must be float in [0, 1], got {x.dtype}; divide uint8 by 255.')

    def colormap(self, hq: torch.Tensor) -> torch.Tensor:
        """Blocky low-resolution colormap, ``(B, 3, H, W)`` float32 in ``[0, 1]``.

        Args:
            hq: float ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            The colormap condition.
        """
        x = hq.float()
        if self.colormap_resize == 'area':
            small = F.interpolate(x, size=self.colormap_size, mode='area')
        else:
            small = F.interpolate(x, size=self.colormap_size, mode='bicubic',
                                  align_corners=False, antialias=True)
        small = small.clamp(0, 1)
        # 'nearest-exact' samples pixel centres like PIL's NEAREST resize.
        return F.interpolate(small, size=hq.shape[-2:], mode='nearest-exact')

    def canny(self, hq: torch.Tensor) -> torch.Tensor:
        """Canny edge map, ``(B, 1, H, W)`` float32 with values in ``{0, 1}``.

        Args:
            hq: float ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            The edge condition on ``hq``'s device.
        """
        img8 = (hq.detach().float() * 255).round().clamp(0, 255).to(torch.uint8)
        img8 = img8.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3) RGB
        edges = []
        for rgb in img8:
            rgb = np.ascontiguousarray(rgb)
            src = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if self.canny_input == 'gray' else rgb
            edges.append(cv2.Canny(src, self.canny_low, self.canny_high))
        out = torch.from_numpy(np.stack(edges)).unsqueeze(1).float() / 255.0
        return out.to(hq.device)

    def resize_lq(self, lq: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """The LQ resized to ``size``, ``(B, 3, *size)`` float32 in ``[0, 1]``.

        Args:
            lq: float ``(B, 3, h, w)`` in ``[0, 1]``.
            size: Target ``(H, W)``.

        Returns:
            The dense LQ condition.
        """
        x = lq.float()
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode=self.lq_resize)
        return x.clamp(0, 1)

    @torch.no_grad()
    def forward(self, hq: torch.Tensor, lq: Optional[torch.Tensor] = None) -> ConditionOutput:
        """Extract the configured condition.

        Args:
            hq: float ``(B, 3, H, W)`` in ``[0, 1]`` on any device.
            lq: float ``(B, 3, h, w)`` in ``[0, 1]``; required for ``mode='lq'``,
                ignored otherwise.

        Returns:
            A tensor for ``'colormap'``, ``'canny'`` and ``'lq'``; the list
            ``[colormap, canny]`` for ``'multi'`` (shapes in the class docstring).
        """
        self._check(hq, 'hq')
        if self.mode == 'colormap':
            return self.colormap(hq)
        if self.mode == 'canny':
            return self.canny(hq)
        if self.mode == 'multi':
            return [self.colormap(hq), self.canny(hq)]
        if lq is None:
            raise ValueError("ConditionExtractor(mode='lq') needs the LQ batch: call it as "
                             'extractor(hq, lq=lq), e.g. with the degradation output "lq".')
        self._check(lq, 'lq')
        if lq.shape[0] != hq.shape[0]:
            raise ValueError(f'lq batch size {lq.shape[0]} differs from hq batch size {hq.shape[0]}.')
        return self.resize_lq(lq.to(hq.device), tuple(hq.shape[-2:]))

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return (f"mode='{self.mode}', colormap_size={self.colormap_size}, "
                f"canny=({self.canny_low:g}, {self.canny_high:g}, '{self.canny_input}')")
