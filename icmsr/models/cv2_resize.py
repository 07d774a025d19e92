"""OpenCV's 8-bit ``INTER_CUBIC`` and ``INTER_NEAREST`` resizes as batched torch ops.

TencentARC trained its colour T2I-Adapter on ``cv2.resize(img, (W // 64, H // 64),
interpolation=cv2.INTER_CUBIC)`` of the 8-bit image, then ``INTER_NEAREST`` back up.
Torch's bicubic differs from it (float arithmetic, no 8-bit rounding), so the
kernels below reproduce OpenCV's own arithmetic on 8-bit images, on any device:

* tap positions ``fx = float((dx + 0.5) * (src / dst) - 0.5)``, 4 taps clamped to the
  image (replicated border), Keys' cubic with ``A = -0.75`` evaluated in float32;
* weights rounded to 11-bit fixed point (``round(w * 2048)``, no renormalisation);
* horizontal pass in exact integers;
* vertical pass as OpenCV's vectorised kernel does it: float32 multiply-adds of the
  integer rows with ``beta / 2**22``, nested ``S0 b0 + (S1 b1 + (S2 b2 + S3 b3))``,
  rounded half to even and saturated to ``[0, 255]``; the last ``(w * C) mod 8``
  values of each interleaved row take OpenCV's scalar fixed-point path
  (``(v + 2**21) >> 22``, ties rounded up), as its 128-bit baseline SIMD leaves them.

The float32 steps are evaluated in float64 and rounded to float32 after each fused
multiply-add (the products are exact in float64), so results do not depend on
whether the device fuses them.

Bound (tested against ``cv2`` itself): bitwise equal to OpenCV's own kernel
(``cv2.ipp.setUseIPP(False)``) for 128-bit SIMD builds; a build with wider baseline
SIMD moves the vectorised/scalar split and may differ by one 8-bit level on exact
``.5`` ties. Builds that route the resize through Intel IPP (opencv-python 5 does by
default) differ from OpenCV's own kernel by at most one level on a few percent of the
colormap cells (IPP has its own rounding).
"""
import functools
from typing import Tuple

import numpy as np
import torch

_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE (11 fractional bits)
# int16 lanes of OpenCV's baseline SIMD (128-bit: SSE of the x86 wheels, NEON on ARM).
_SIMD_LANES = 8


def _keys_cubic(x: np.float32) -> np.ndarray:
    """The 4 cubic weights of fractional offset ``x``, in float32 as OpenCV computes them."""
    a, one = np.float32(-0.75), np.float32(1)
    x1, mx = x + one, one - x
    c0 = ((a * x1 - np.float32(5) * a) * x1 + np.float32(8) * a) * x1 - np.float32(4) * a
    c1 = ((a + np.float32(2)) * x - (a + np.float32(3))) * x * x + one
    c2 = ((a + np.float32(2)) * mx - (a + np.float32(3))) * mx * mx + one
    return np.array([c0, c1, c2, one - c0 - c1 - c2], dtype=np.float32)


@functools.lru_cache(maxsize=64)
def cubic_taps(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights of OpenCV's 8-bit cubic resize, one axis.

    Args:
        src: input length.
        dst: output length.

    Returns:
        ``(index, weight)``, both ``(dst, 4)`` int64; the weights sum to about 2048.
    """
    scale = 1.0 / (dst / src)  # OpenCV: scale_x = 1. / inv_scale_x, in double
    index = np.empty((dst, 4), dtype=np.int64)
    weight = np.empty((dst, 4), dtype=np.int64)
    for d in range(dst):
        fx = np.float32((d + 0.5) * scale - 0.5)
        sx = int(np.floor(fx))
        coeffs = _keys_cubic(np.float32(fx - np.float32(sx)))
        weight[d] = np.rint(coeffs * np.float32(_COEF_SCALE)).astype(np.int64)
        index[d] = np.clip(np.arange(sx - 1, sx + 3), 0, src - 1)
    return index, weight


@functools.lru_cache(maxsize=64)
def nearest_index(src: int, dst: int) -> np.ndarray:
    """OpenCV's ``INTER_NEAREST`` source index ``floor(d * (1 / (dst / src)))`` per output.

    Args:
        src: input length.
        dst: output length.

    Returns:
        ``(dst,)`` int64 indices.
    """
    inv = 1.0 / (dst / src)
    return np.minimum(np.floor(np.arange(dst) * inv).astype(np.int64), src - 1)


def _check_u8(img: torch.Tensor) -> None:
    if img.ndim != 4 or img.is_floating_point():
        raise TypeError('expected an integer (B, C, H, W) tensor of 8-bit values, got '
                        f'{img.dtype} of shape {tuple(img.shape)}.')


def resize_cubic_u8(img: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)`` of 8-bit images, batched.

    Args:
        img: ``(B, C, H, W)`` integer tensor with values in ``[0, 255]`` (any device).
        size: output ``(h, w)``, both >= 1.

    Returns:
        ``(B, C, h, w)`` uint8 on ``img``'s device (bound: module docstring).
    """
    _check_u8(img)
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f'resize_cubic_u8: output size must be positive, got {size}.')
    b, c, src_h, src_w = img.shape
    iy, wy = (torch.from_numpy(a).to(img.device) for a in cubic_taps(src_h, h))
    ix, wx = (torch.from_numpy(a).to(img.device) for a in cubic_taps(src_w, w))
    # Only the 4h source rows the vertical taps read need the horizontal pass.
    rows = img.long()[:, :, iy.reshape(-1)]                       # (B, C, 4h, W)
    taps = rows[..., ix.reshape(-1)].reshape(b, c, h, 4, w, 4)
    horizontal = (taps * wx.view(1, 1, 1, 1, w, 4)).sum(-1)        # exact integers
    beta = wy.double() / float(_COEF_SCALE * _COEF_SCALE)          # exact float32 values
    s = horizontal.double()
    acc = (s[:, :, :, 3] * beta[:, 3].view(1, 1, h, 1)).float().double()
    for k in (2, 1, 0):  # one float32 rounding per fused multiply-add
        acc = (s[:, :, :, k] * beta[:, k].view(1, 1, h, 1) + acc).float().double()
    out = torch.round(acc)
    # OpenCV runs the vertical pass on the interleaved row (w * C values) in chunks of
    # _SIMD_LANES; the remainder takes the scalar fixed-point path (round half up).
    flat = torch.arange(w, device=img.device).view(1, w) * c + torch.arange(
        c, device=img.device).view(c, 1)                            # (C, w) row positions
    tail = flat >= (w * c) // _SIMD_LANES * _SIMD_LANES
    if bool(tail.any()):
        fixed = (horizontal * wy.view(1, 1, h, 4, 1)).sum(3)
        fixed = torch.div(fixed + (1 << 21), 1 << 22, rounding_mode='floor').double()
        out = torch.where(tail.view(1, c, 1, w), fixed, out)
    return out.clamp(0, 255).to(torch.uint8)


def resize_nearest(img: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)``, batched (exact).

    Args:
        img: ``(B, C, H, W)`` tensor of any dtype.
        size: output ``(h, w)``.

    Returns:
        ``(B, C, h, w)`` tensor of ``img``'s dtype and device.
    """
    iy = torch.from_numpy(nearest_index(img.shape[-2], int(size[0]))).to(img.device)
    ix = torch.from_numpy(nearest_index(img.shape[-1], int(size[1]))).to(img.device)
    return img[:, :, iy][..., ix]
