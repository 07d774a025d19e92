"""SSIM with a separable Gaussian window, equal to pyiqa's ``ssim`` metric.

pyiqa computes SSIM (``test_y_channel=True``) on the rounded 8-bit Y channel in
float64 with an 11x11 Gaussian window (sigma 1.5) applied as five full 2-D
convolutions over the valid region. On CPU, PyTorch has no fast float64 2-D
convolution. The Gaussian window is the outer product of a 1-D Gaussian with
itself, so the same filtering is two 1-D passes (a row pass then a column pass),
11 + 11 taps instead of 121: the same statistics up to float64 rounding (and
pyiqa's float32-stored window, see :func:`window_1d`). Measured on 8 RealSR
512x512 pairs, one CPU thread (``tools/benchmarks/metrics.py --pyiqa``): pyiqa
1.41 s per image, this 0.061 s (23x), values equal to 1.1e-10; over the 100
RealSR images that is 2.3 minutes saved per evaluation.

Everything else follows pyiqa's definition: the Y channel is produced by pyiqa's
own preprocessing (so the rounding of every pixel is identical), constants
``C1 = (0.01 * 255)^2`` and ``C2 = (0.03 * 255)^2``, the contrast-structure map is
clamped at zero, the map is averaged over the valid region (``H - 10`` by
``W - 10``), and the optional MATLAB-style average-pool downsample is supported.
``tests/evaluation/test_fast_ssim.py`` checks equality with pyiqa to 1e-8
(measured ~1e-10).
"""
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
DATA_RANGE = 255.0


def gaussian_1d(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> torch.Tensor:
    """The normalized 1-D Gaussian whose outer product is MATLAB's ``fspecial`` window.

    Args:
        size: Number of taps (odd).
        sigma: Standard deviation in pixels.

    Returns:
        Float64 tensor ``(size,)`` summing to 1.
    """
    half = (size - 1) / 2.0
    x = np.arange(-half, half + 1)
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    # fspecial zeroes taps below eps * max of the 2-D window; for a window of
    # 11 taps and sigma 1.5 the smallest 2-D tap is ~1e-5 of the max, so none is.
    return torch.from_numpy(g / g.sum())


def window_1d(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> torch.Tensor:
    """The 1-D factor of pyiqa's SSIM window, including its float32 storage.

    pyiqa stores the 2-D window in float32, so its taps sum to ``1 - 6.2e-9``
    rather than 1. In flat regions the variance ``E[x^2] - mu^2`` inherits that
    deficit times ``mu^2`` (up to 255^2), which moved per-image SSIM by up to
    4e-7 on RealSR. Scaling the exact 1-D Gaussian so that its outer product has
    the same total removes this (remaining difference ~1e-10).

    Args:
        size: Number of taps.
        sigma: Standard deviation in pixels.

    Returns:
        Float64 tensor ``(size,)``.
    """
    g = gaussian_1d(size, sigma)
    total = torch.outer(g, g).float().double().sum()
    return g * total.sqrt()


def separable_filter(maps: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Filter each map with ``outer(g, g)``, keeping the valid region.

    Args:
        maps: ``(..., H, W)`` float64.
        g: ``(K,)`` 1-D window.

    Returns:
        ``(..., H - K + 1, W - K + 1)``.
    """
    # Shifted multiply-adds: PyTorch's CPU float64 convolution takes a slow
    # generic path (~4x slower than this even for 1-D kernels).
    taps = [float(t) for t in g]
    k = len(taps)
    w = maps.shape[-1] - k + 1
    rows = maps[..., 0:w] * taps[0]
    for i in range(1, k):
        rows.add_(maps[..., i:i + w], alpha=taps[i])
    h = maps.shape[-2] - k + 1
    out = rows[..., 0:h, :] * taps[0]
    for i in range(1, k):
        out.add_(rows[..., i:i + h, :], alpha=taps[i])
    return out


def ssim_y(x: torch.Tensor, y: torch.Tensor, downsample: bool = False) -> torch.Tensor:
    """SSIM of single-channel images already scaled to ``[0, 255]``.

    Args:
        x: ``(B, 1, H, W)`` float64 (e.g. the rounded Y channel).
        y: Reference, same shape.
        downsample: Average-pool by ``round(min(H, W) / 256)`` first (MATLAB's
            reference code; pyiqa's ``ssim`` default is False).

    Returns:
        ``(B,)`` float64 SSIM values.

    Raises:
        ValueError: When shapes differ, or the images are smaller than the window.
    """
    if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f'ssim_y expects two (B, 1, H, W) tensors of one shape, '
                         f'got {tuple(x.shape)} and {tuple(y.shape)}')
    factor = max(1, round(min(x.shape[-2:]) / 256))
    if downsample and factor > 1:
        x, y = F.avg_pool2d(x, factor), F.avg_pool2d(y, factor)
    if min(x.shape[-2:]) < WINDOW_SIZE:
        raise ValueError(f'SSIM needs images of at least {WINDOW_SIZE}x{WINDOW_SIZE} pixels '
                         f'(after downsampling), got {tuple(x.shape[-2:])}')
    b = x.shape[0]
    g = window_1d().to(x)
    # One batch of five maps: x, y, x^2, y^2, xy -> five local means.
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=0)
    mu_x, mu_y, e_xx, e_yy, e_xy = separable_filter(stacked, g).split(b, dim=0)
    c1 = (0.01 * DATA_RANGE) ** 2
    c2 = (0.03 * DATA_RANGE) ** 2
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x, var_y, cov_xy = e_xx - mu_xx, e_yy - mu_yy, e_xy - mu_xy
    cs = ((2 * cov_xy + c2) / (var_x + var_y + c2)).clamp_min(0)
    ssim_map = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs
    return ssim_map.mean(dim=(1, 2, 3))


class FastSSIMScorer:
    """SSIM scorer equal to pyiqa's ``ssim`` metric, with a separable window.

    Args:
        test_y_channel: Score the Y channel (pyiqa's default; the only setting
            checked against pyiqa in our tests besides RGB averaging).
        color_space: Color space whose first channel is scored (``'ycbcr'`` in
            Real-ISR tables; pyiqa's default is ``'yiq'``).
        crop_border: Pixels dropped at each edge before scoring.
        downsample: MATLAB-style average-pool downsample (pyiqa default False).
        device: Device to compute on (CPU default).
    """

    def __init__(self, test_y_channel: bool = True, color_space: str = 'yiq',
                 crop_border: int = 0, downsample: bool = False,
                 device: Optional[torch.device] = None) -> None:
        self.test_y_channel = test_y_channel
        self.color_space = color_space
        self.crop_border = int(crop_border)
        self.downsample = downsample
        self.device = torch.device(device or 'cpu')

    def _prepare(self, img: torch.Tensor) -> torch.Tensor:
        # pyiqa's own preprocessing (float32 color transform, rounding to
        # integers), so every pixel of the scored channel is identical.
        from pyiqa.archs.func_util import preprocess_rgb
        return preprocess_rgb(img, self.test_y_channel, DATA_RANGE,
                              self.color_space).to(torch.float64)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: Optional[torch.Tensor] = None) -> List[float]:
        """Score a batch.

        Args:
            pred: ``(B, 3, H, W)`` in ``[0, 1]``.
            gt: ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            One SSIM value per image.

        Raises:
            ValueError: When ``gt`` is missing or shapes differ.
        """
        if gt is None:
            raise ValueError('SSIM needs the GT image (gt_img) for each sample')
        if pred.shape != gt.shape:
            raise ValueError(f'SSIM needs SR and GT images of one shape, got '
                             f'{tuple(pred.shape)} and {tuple(gt.shape)}')
        pred = pred.to(self.device, torch.float32)
        gt = gt.to(self.device, torch.float32)
        c = self.crop_border
        if c:
            pred, gt = pred[..., c:-c, c:-c], gt[..., c:-c, c:-c]
        x, y = self._prepare(pred), self._prepare(gt)
        if x.shape[1] != 1:
            # Without the Y channel, pyiqa filters each channel and averages all.
            b, ch = x.shape[:2]
            vals = ssim_y(x.reshape(b * ch, 1, *x.shape[-2:]),
                          y.reshape(b * ch, 1, *y.shape[-2:]), self.downsample)
            return [float(v) for v in vals.view(b, ch).mean(dim=1)]
        return [float(v) for v in ssim_y(x, y, self.downsample)]
