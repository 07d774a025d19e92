"""Colour correction of a super-resolved image toward its low-quality input.

One-step diffusion SR can drift in global colour (the VAE and the generative
prior both shift hue and saturation slightly). Two cheap post-hoc fixes are
common in this family of models and offered here:

* ``adain``: per-channel mean/std of the output are matched to the reference
  (the LQ image resized to the output size). Fixes global cast and contrast.
* ``wavelet``: the output's low-frequency band (what a stack of dilated
  3x3 blurs keeps) is replaced by the reference's low-frequency band, while
  the output's high-frequency detail is kept. Fixes local colour too.

All functions take float tensors ``(B, C, H, W)`` (or ``(C, H, W)``) in
``[0, 1]`` and return the same layout, clamped to ``[0, 1]``.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

COLOR_FIX_MODES = ('none', 'adain', 'wavelet')


def _as_batch(x: torch.Tensor, name: str) -> Tuple[torch.Tensor, bool]:
    """Return ``x`` as a 4-D batch and whether a batch axis was added."""
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(f'{name} must be (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}')
    return x, False


def _match_reference(reference: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize the reference (usually the LQ image) to the output size, bicubic."""
    if tuple(reference.shape[-2:]) == tuple(size):
        return reference
    return F.interpolate(reference, size=size, mode='bicubic', align_corners=False).clamp(0, 1)


def _apply(fix, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Run ``fix(img, ref)`` on float32 batches (reference resized), clamp, restore shape and dtype."""
    img, squeezed = _as_batch(image, 'image')
    ref, _ = _as_batch(reference, 'reference')
    dtype = img.dtype
    img, ref = img.float(), ref.float()
    out = fix(img, _match_reference(ref, img.shape[-2:])).clamp(0, 1).to(dtype)
    return out[0] if squeezed else out


def adain_color_fix(image: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Match per-channel mean and standard deviation of ``image`` to ``reference``.

    Args:
        image: SR output, ``(B, C, H, W)`` or ``(C, H, W)`` in ``[0, 1]``.
        reference: Colour reference of the same batch size and channels, any
            spatial size (resized bicubically to ``image``'s size).
        eps: Added to the variance before the square root.

    Returns:
        The corrected image, same shape and dtype as ``image``, in ``[0, 1]``.
    """
    def fix(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        # Unbiased variance, as torch.var does by default; both sides use the same estimator.
        i_mean, i_std = img.mean((2, 3), keepdim=True), (img.var((2, 3), keepdim=True) + eps).sqrt()
        r_mean, r_std = ref.mean((2, 3), keepdim=True), (ref.var((2, 3), keepdim=True) + eps).sqrt()
        return (img - i_mean) / i_std * r_std + r_mean

    return _apply(fix, image, reference)


def wavelet_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur with the 3x3 binomial kernel dilated by ``radius`` (replicate padding).

    Args:
        x: ``(B, C, H, W)`` float tensor.
        radius: Dilation of the kernel taps (1, 2, 4, ...).

    Returns:
        The blurred tensor, same shape.
    """
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)
    # Replicate padding needs pad < size only for reflect; replicate works for any size.
    padded = F.pad(x, (radius, radius, radius, radius), mode='replicate')
    return F.conv2d(padded, kernel, groups=x.shape[1], dilation=radius)


def wavelet_decompose(x: torch.Tensor, levels: int = 5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` into high- and low-frequency parts with an a-trous wavelet stack.

    Args:
        x: ``(B, C, H, W)`` float tensor.
        levels: Number of dilated blurs (radius ``2**i`` for ``i < levels``).

    Returns:
        ``(high, low)`` with ``high + low == x``.
    """
    low = x
    for i in range(levels):
        low = wavelet_blur(low, 2 ** i)
    return x - low, low


def wavelet_color_fix(image: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Keep the detail of ``image`` and take the low-frequency colour of ``reference``.

    Args:
        image: SR output, ``(B, C, H, W)`` or ``(C, H, W)`` in ``[0, 1]``.
        reference: Colour reference (resized bicubically to ``image``'s size).
        levels: Depth of the wavelet stack; larger moves more of the band to the reference.

    Returns:
        The corrected image, same shape and dtype as ``image``, in ``[0, 1]``.
    """
    def fix(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return wavelet_decompose(img, levels)[0] + wavelet_decompose(ref, levels)[1]

    return _apply(fix, image, reference)


def color_fix(image: torch.Tensor, reference: torch.Tensor, mode: str = 'none') -> torch.Tensor:
    """Dispatch to a colour-correction method by name.

    Args:
        image: SR output in ``[0, 1]``.
        reference: Colour reference in ``[0, 1]`` (typically the LQ input).
        mode: One of ``'none'``, ``'adain'``, ``'wavelet'``.

    Returns:
        The corrected image (``image`` itself for ``'none'``).
    """
    if mode in (None, 'none'):
        return image
    if mode == 'adain':
        return adain_color_fix(image, reference)
    if mode == 'wavelet':
        return wavelet_color_fix(image, reference)
    raise ValueError(f'Unknown colour-correction mode {mode!r}; choose one of {COLOR_FIX_MODES}.')
