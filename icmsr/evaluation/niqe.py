"""NIQE as pyiqa computes it, on a Y channel that is the same on every CPU.

pyiqa's ``calculate_niqe`` takes ``255 * (0.299 R + 0.587 G + 0.114 B)`` as a
float32 matrix product and rounds it to integers. For 8-bit input that value is
``(299 R8 + 587 G8 + 114 B8) / 1000``, an exact ``x.5`` tie for about one pixel
in a thousand, and float32 rounding, which depends on the BLAS kernel's
summation order and FMA use, decides each tie. NIQE is sensitive to those few
pixels: OSEDiff's RealSR ``Canon_001`` has 722 ties and scores 5.674779 through
MKL's AVX-512 path and 5.691741 through its AVX2/compatible path
(``MKL_CBWR=COMPATIBLE``; the value an AMD EPYC machine reported).
:func:`luma_8bit` sums the integers and rounds ties to even (pyiqa's formula in
exact arithmetic); everything after it is pyiqa's own ``niqe``. The result moves
by less than 1e-11 between AVX2/AVX-512 kernels, MKL paths and thread counts.

pyiqa's NIQE costs 0.29 s per 512x512 image on one CPU thread; a separable
re-implementation of its Gaussian filtering, which this module used to carry,
took 0.10 s: too small a gain to keep a second NIQE.
"""
import torch


def luma_8bit(img: torch.Tensor) -> torch.Tensor:
    """Integer Y of YIQ (pyiqa's NIQE luma) of 8-bit RGB images, the same on every CPU.

    Args:
        img: ``(B, 3, H, W)`` in ``[0, 1]``; values are rounded to 8-bit codes
            first (as saving a PNG does), which 8-bit images pass unchanged.

    Returns:
        ``(B, 1, H, W)`` float64 integers in ``[0, 255]``.
    """
    q = (img.clamp(0, 1) * 255).round().to(torch.int32)
    total = 299 * q[:, 0:1] + 587 * q[:, 1:2] + 114 * q[:, 2:3]
    # Exact in float64 (x.5 ties included); torch.round sends ties to even.
    return torch.round(total.to(torch.float64) / 1000)


def niqe_8bit(img: torch.Tensor, mu_pris: torch.Tensor, cov_pris: torch.Tensor,
              crop_border: int = 0, block: int = 96) -> torch.Tensor:
    """NIQE of 8-bit RGB images: pyiqa's ``niqe`` on :func:`luma_8bit`.

    Args:
        img: ``(B, 3, H, W)`` in ``[0, 1]``.
        mu_pris: ``(36,)`` natural-scene feature mean.
        cov_pris: ``(36, 36)`` natural-scene feature covariance.
        crop_border: Pixels dropped at each edge.
        block: Block size (96 in the reference code).

    Returns:
        ``(B,)`` float64 NIQE values.

    Raises:
        ValueError: When the (cropped) image is smaller than one block.
    """
    from pyiqa.archs.niqe_arch import niqe
    y = luma_8bit(img)
    if crop_border:
        y = y[..., crop_border:-crop_border, crop_border:-crop_border]
    h, w = y.shape[-2:]
    if h < block or w < block:
        raise ValueError(f'NIQE needs images of at least {block}x{block} pixels, got {h}x{w}')
    b = y.shape[0]
    out = niqe(y, mu_pris.to(y).repeat(b, 1), cov_pris.to(y).repeat(b, 1, 1), block, block)
    return out.reshape(-1)
