"""ConditionExtractor: the structural image condition F_c of ICM-SR.

ICM-SR conditions the teacher's manifold on sparse structure extracted from the
HQ image: a coarse colormap (upsampled back with nearest neighbours) and Canny
edges, fed to TencentARC's T2I-Adapters (inputs in ``[0, 1]``). The ``lq`` mode
is the dense condition of the paper's ICM-SR-lq ablation.

The default recipe is the one the adapters were trained on (TencentARC's
``ldm/data/utils.py``): colormap = OpenCV ``INTER_CUBIC`` of the 8-bit image down to
``(H // 64, W // 64)`` (no antialiasing), ``INTER_NEAREST`` back up; Canny(100, 200)
on the 3-channel BGR image. ``recipe='antialiased8'`` is a fixed 8x8 antialiased
bicubic colormap and Canny on gray.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from icmsr.registry import MODELS

ConditionOutput = Union[torch.Tensor, List[torch.Tensor]]

#: Named option sets; explicit arguments override them.
RECIPES: Dict[str, Dict[str, Any]] = {
    # TencentARC's training inputs (AddSpatialPalette, AddCannyFreezeThreshold).
    'tencentarc': dict(colormap_size=None, colormap_resize='cv2_bicubic', canny_input='color'),
    # PIL-like antialiased 8x8 colormap, gray Canny.
    'antialiased8': dict(colormap_size=8, colormap_resize='bicubic', canny_input='gray'),
}
_RESIZES = ('cv2_bicubic', 'bicubic', 'area')
_CANNY_INPUTS = ('color', 'rgb', 'gray')


@MODELS.register_module()
class ConditionExtractor(nn.Module):
    """Compute the structural condition ``F_c`` of a batch of HQ images.

    Outputs, for ``hq`` of shape ``(B, 3, H, W)`` (all float32, on ``hq``'s device):

    - ``'colormap'``: ``(B, 3, H, W)`` in ``[0, 1]``; the image resized to a
      coarse grid then back to ``(H, W)``, i.e. constant blocks. The grid is
      ``(H // colormap_downscale, W // colormap_downscale)`` when ``colormap_size``
      is None (TencentARC: 64, so 8x8 for 512 px), else ``colormap_size``.
      ``colormap_resize='cv2_bicubic'`` (default) is OpenCV's 8-bit ``INTER_CUBIC``
      of ``round(255 x)`` in BGR order and ``INTER_NEAREST`` back (``cv2.resize``
      per image on the CPU), values multiples of 1/255;
      ``'bicubic'`` is float antialiased bicubic (PIL ``BICUBIC`` to within a few
      8-bit levels) and ``'area'`` the box average (``INTER_AREA``), both clamped
      and brought back with ``nearest-exact``.
    - ``'canny'``: ``(B, 1, H, W)`` with values in ``{0, 1}``; OpenCV's Canny
      (thresholds ``canny_low``, ``canny_high``, 3x3 Sobel, L1 gradient) on the
      8-bit image (``round(255 x)``): ``canny_input='color'`` (default) on the
      three channels in BGR order, as TencentARC feeds ``cv2.Canny`` (OpenCV
      takes the strongest channel gradient; the channel order decides ties),
      ``'rgb'`` on the three channels in RGB order, ``'gray'`` on
      ``cv2.COLOR_RGB2GRAY``.
    - ``'multi'``: ``[colormap, canny]``, the inputs of a ``MultiAdapter``
      with adapters in that order.
    - ``'lq'``: the LQ batch (any size) resized to ``(H, W)`` with
      ``lq_resize`` (default bicubic, no antialiasing, like the resize-back of
      the training LQ), clamped to ``[0, 1]``, ``(B, 3, H, W)``.

    OpenCV runs on the CPU; the result is moved back to ``hq``'s device.

    Args:
        mode: One of ``'colormap'``, ``'canny'``, ``'multi'``, ``'lq'``.
        recipe: named defaults, ``'tencentarc'`` (default) or ``'antialiased8'``
            (see :data:`RECIPES`); the three arguments below override it.
        colormap_size: fixed grid, int or ``(h, w)``; None: image size //
            ``colormap_downscale``; ``'recipe'`` (default): the recipe's value.
        colormap_resize: ``'cv2_bicubic'``, ``'bicubic'`` (antialiased) or ``'area'``.
        canny_input: ``'color'`` (BGR), ``'rgb'`` or ``'gray'``.
        colormap_downscale: divisor of the image-size-dependent grid (TencentARC: 64).
        canny_low: Lower hysteresis threshold of Canny.
        canny_high: Upper hysteresis threshold of Canny.
        lq_resize: Interpolation mode for ``'lq'`` (any ``F.interpolate`` mode).
    """

    MODES = ('colormap', 'canny', 'multi', 'lq')

    def __init__(self, mode: str = 'multi',
                 recipe: str = 'tencentarc',
                 colormap_size: Union[None, str, int, Sequence[int]] = 'recipe',
                 colormap_resize: Optional[str] = None,
                 canny_input: Optional[str] = None,
                 colormap_downscale: int = 64,
                 canny_low: float = 100,
                 canny_high: float = 200,
                 lq_resize: str = 'bicubic') -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f'ConditionExtractor mode must be one of {self.MODES}, got {mode!r}.')
        if recipe not in RECIPES:
            raise ValueError(f'ConditionExtractor recipe must be one of {sorted(RECIPES)}, '
                             f'got {recipe!r}.')
        defaults = RECIPES[recipe]
        colormap_size = defaults['colormap_size'] if colormap_size == 'recipe' else colormap_size
        colormap_resize = colormap_resize or defaults['colormap_resize']
        canny_input = canny_input or defaults['canny_input']
        if colormap_resize not in _RESIZES:
            raise ValueError(f'colormap_resize must be one of {_RESIZES}, got {colormap_resize!r}.')
        if canny_input not in _CANNY_INPUTS:
            raise ValueError(f'canny_input must be one of {_CANNY_INPUTS}, got {canny_input!r}.')
        if not 0 <= canny_low <= canny_high:
            raise ValueError(f'need 0 <= canny_low <= canny_high, got {canny_low}, {canny_high}.')
        size: Optional[Tuple[int, int]] = None
        if colormap_size is not None:
            pair = ((colormap_size, colormap_size) if isinstance(colormap_size, int)
                    else tuple(colormap_size))
            if len(pair) != 2 or min(pair) < 1:
                raise ValueError('colormap_size must be None, a positive int or (h, w), '
                                 f'got {colormap_size}.')
            size = (int(pair[0]), int(pair[1]))
        if int(colormap_downscale) < 1:
            raise ValueError(f'colormap_downscale must be >= 1, got {colormap_downscale}.')
        self.mode = mode
        self.recipe = recipe
        self.colormap_size = size
        self.colormap_downscale = int(colormap_downscale)
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

    @staticmethod
    def _host_uint8(hq: torch.Tensor) -> List[np.ndarray]:
        """``round(255 x)`` as contiguous uint8 ``(H, W, 3)`` RGB arrays on the host, one per image."""
        img8 = (hq.detach().float() * 255).round().clamp(0, 255).to(torch.uint8)
        return [np.ascontiguousarray(a) for a in img8.permute(0, 2, 3, 1).cpu().numpy()]

    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        """The colormap grid ``(h, w)`` for an image of ``height x width``.

        Args:
            height: image height.
            width: image width.

        Returns:
            ``colormap_size``, or the image size floor-divided by ``colormap_downscale``.
        """
        if self.colormap_size is not None:
            return self.colormap_size
        grid = (height // self.colormap_downscale, width // self.colormap_downscale)
        if min(grid) < 1:
            raise ValueError(
                f'colormap: a {height}x{width} image has no {self.colormap_downscale}-px '
                'colormap cell (TencentARC\'s grid is H // 64 x W // 64); use images of at '
                'least that size or set colormap_size=(h, w) for a fixed grid.')
        return grid

    def colormap(self, hq: torch.Tensor) -> torch.Tensor:
        """Blocky low-resolution colormap, ``(B, 3, H, W)`` float32 in ``[0, 1]``.

        Args:
            hq: float ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            The colormap condition.
        """
        grid = self.grid_size(*hq.shape[-2:])
        if self.colormap_resize == 'cv2_bicubic':
            # cv2 itself, per image on the host as for Canny: TencentARC's arithmetic exactly.
            height, width = hq.shape[-2:]
            maps = []
            for rgb in self._host_uint8(hq):
                bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # TencentARC's channel order
                small = cv2.resize(bgr, grid[::-1], interpolation=cv2.INTER_CUBIC)
                big = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
                maps.append(cv2.cvtColor(big, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))
            return (torch.from_numpy(np.stack(maps)).float() / 255).to(hq.device)
        x = hq.float()
        if self.colormap_resize == 'area':
            small = F.interpolate(x, size=grid, mode='area')
        else:
            small = F.interpolate(x, size=grid, mode='bicubic',
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
        edges = []
        for rgb in self._host_uint8(hq):
            if self.canny_input == 'gray':
                src = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            elif self.canny_input == 'color':
                src = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # TencentARC's channel order
            else:
                src = rgb
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
        grid = self.colormap_size or f'size//{self.colormap_downscale}'
        return (f"mode='{self.mode}', recipe='{self.recipe}', colormap=({grid}, "
                f"'{self.colormap_resize}'), "
                f"canny=({self.canny_low:g}, {self.canny_high:g}, '{self.canny_input}')")
