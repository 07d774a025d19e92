"""NIQE equal to pyiqa's ``calculate_niqe``, with a separable Gaussian filter.

pyiqa normalizes the image (local mean and deviation under a 7x7 Gaussian,
sigma 7/6, replicate padding) with full 2-D float64 convolutions, which on CPU
take ~70% of NIQE's ~0.4 s per 512x512 image. Here the same filtering runs as
two 1-D passes (see :mod:`icmsr.evaluation.fast_ssim`, whose window total also
matches pyiqa's float32-stored window). Everything after the normalization
(96-px block features, the MATLAB-style half-size resize, the fitted Gaussian
and the distance) calls pyiqa's own functions, so only the filtering differs.
``tests/evaluation/test_fast_niqe.py`` checks equality with pyiqa.
"""
import math

import torch
import torch.nn.functional as F

from .fast_ssim import separable_filter, window_1d


def normalize_with_gauss(img: torch.Tensor, kernel_size: int = 7,
                         sigma: float = 7.0 / 6, c: float = 1.0) -> torch.Tensor:
    """Mean-subtracted, contrast-normalized image (NIQE's MSCN coefficients).

    Args:
        img: ``(B, 1, H, W)`` float64.
        kernel_size: Gaussian taps.
        sigma: Gaussian standard deviation.
        c: Stabilizing constant added to the local deviation.

    Returns:
        Tensor of the input's shape.
    """
    pad = kernel_size // 2
    padded = F.pad(img, (pad, pad, pad, pad), mode='replicate')
    b = img.shape[0]
    g = window_1d(kernel_size, sigma).to(img)
    mu, e_xx = separable_filter(torch.cat([padded, padded * padded]), g).split(b)
    eps = torch.finfo(img.dtype).eps  # as pyiqa's safe square root
    dev = torch.sqrt((e_xx - mu * mu).abs() + eps)
    return (img - mu) / (dev + c)


def niqe_y(img: torch.Tensor, mu_pris: torch.Tensor, cov_pris: torch.Tensor,
           block: int = 96) -> torch.Tensor:
    """NIQE of rounded Y-channel images in ``[0, 255]``.

    Args:
        img: ``(B, 1, H, W)`` float64, at least ``block`` pixels each side.
        mu_pris: ``(B, 36)`` natural-scene feature mean.
        cov_pris: ``(B, 36, 36)`` natural-scene feature covariance.
        block: Block size at full scale (96 in the reference code).

    Returns:
        ``(B,)`` NIQE values.
    """
    from pyiqa.archs.niqe_arch import compute_feature
    from pyiqa.matlab_utils import blockproc, imresize, nancov, nanmean
    h, w = img.shape[-2:]
    if h < block or w < block:
        raise ValueError(f'NIQE needs images of at least {block}x{block} pixels, got {h}x{w}')
    img = img[..., : math.floor(h / block) * block, : math.floor(w / block) * block]
    feats = []
    for scale in (1, 2):
        feats.append(blockproc(normalize_with_gauss(img), [block // scale, block // scale],
                               fun=compute_feature))
        if scale == 1:
            img = imresize(img / 255.0, scale=0.5, antialiasing=True) * 255.0
    feats = torch.cat(feats, -1)
    mu, cov = nanmean(feats, dim=1), nancov(feats)
    inv = torch.linalg.pinv((cov_pris + cov) / 2)
    diff = (mu_pris - mu).unsqueeze(1)
    return torch.sqrt(torch.bmm(torch.bmm(diff, inv), diff.transpose(1, 2)).reshape(-1))


def calculate_niqe_fast(img: torch.Tensor, crop_border: int, mu_pris: torch.Tensor,
                        cov_pris: torch.Tensor, color_space: str = 'yiq') -> torch.Tensor:
    """NIQE of RGB images as pyiqa's ``calculate_niqe`` with ``test_y_channel=True``.

    Args:
        img: ``(B, 3, H, W)`` in ``[0, 1]`` (float32 like pyiqa's file reader).
        crop_border: Pixels dropped at each edge.
        mu_pris: ``(36,)`` natural-scene mean.
        cov_pris: ``(36, 36)`` natural-scene covariance.
        color_space: Color space whose first channel is scored.

    Returns:
        ``(B,)`` NIQE values.
    """
    from pyiqa.utils.color_util import to_y_channel
    y = to_y_channel(img, 255, color_space).round().to(torch.float64)
    if crop_border:
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    b = y.shape[0]
    return niqe_y(y, mu_pris.to(y).repeat(b, 1), cov_pris.to(y).repeat(b, 1, 1))
