"""Poisson (shot) noise for a batch, equal to BasicSR's but without ``torch.unique``.

BasicSR's ``random_add_poisson_noise_pt`` scales each image by the number of
distinct 8-bit levels it contains (rounded up to a power of two) before
sampling ``torch.poisson``. It counts the levels with ``torch.unique`` once
per image and per colour/gray pass, a sort of the whole image that takes more
time than the Poisson sampling itself on CPU. Counting the occupied bins of a
256-bin histogram gives the same number. The random draws (``torch.rand``
for scale and gray flags, then ``torch.poisson`` for the gray and the colour
pass) happen in BasicSR's order, so for the same RNG state the output is
bitwise identical to BasicSR's.
"""
from typing import Sequence

import numpy as np
import torch
from torchvision.transforms.functional import rgb_to_grayscale


def _to_8bit_grid(img: torch.Tensor) -> torch.Tensor:
    """``clamp(round(255 x), 0, 255) / 255`` (the levels BasicSR counts)."""
    return torch.clamp((img * 255.0).round(), 0, 255) / 255.0


def _level_scale(img_8bit: torch.Tensor) -> torch.Tensor:
    """Per image ``2 ** ceil(log2(number of distinct 8-bit values))``.

    Args:
        img_8bit: ``(B, C, H, W)`` on the 8-bit grid (see :func:`_to_8bit_grid`).

    Returns:
        ``(B, 1, 1, 1)`` tensor of ``img_8bit``'s dtype and device.
    """
    b = img_8bit.shape[0]
    codes = (img_8bit * 255.0).round().long().view(b, -1)
    codes = codes + 256 * torch.arange(b, device=codes.device).view(b, 1)
    occupied = torch.bincount(codes.flatten(), minlength=256 * b).view(b, 256).gt(0).sum(dim=1)
    # float64 numpy arithmetic as in BasicSR, then cast like ``new_tensor``.
    levels = 2 ** np.ceil(np.log2(occupied.cpu().numpy().astype(np.float64)))
    return img_8bit.new_tensor(levels.tolist()).view(b, 1, 1, 1)


def poisson_noise(img: torch.Tensor, scale: torch.Tensor, gray_noise: torch.Tensor) -> torch.Tensor:
    """Poisson noise of a batch (BasicSR's ``generate_poisson_noise_pt``).

    Args:
        img: ``(B, 3, H, W)`` in ``[0, 1]``.
        scale: ``(B,)`` noise strength per image.
        gray_noise: ``(B,)`` of 0/1: 1 for channel-shared (gray) noise.

    Returns:
        The noise, ``(B, 3, H, W)`` (not yet added to ``img``).
    """
    b, _, h, w = img.shape
    gray_noise = gray_noise.view(b, 1, 1, 1)
    use_gray = bool(torch.sum(gray_noise) > 0)
    if use_gray:
        gray = _to_8bit_grid(rgb_to_grayscale(img, num_output_channels=1))
        levels = _level_scale(gray)
        noise_gray = (torch.poisson(gray * levels) / levels - gray).expand(b, 3, h, w)
    img = _to_8bit_grid(img)
    levels = _level_scale(img)
    noise = torch.poisson(img * levels) / levels - img
    if use_gray:
        noise = noise * (1 - gray_noise) + noise_gray * gray_noise
    return noise * scale.view(b, 1, 1, 1)


def random_add_poisson_noise(img: torch.Tensor, scale_range: Sequence[float],
                             gray_prob: float) -> torch.Tensor:
    """Add Poisson noise with per-image random strength; clip to ``[0, 1]``.

    Same draws and result as BasicSR's ``random_add_poisson_noise_pt(img,
    scale_range, gray_prob, clip=True, rounds=False)``.

    Args:
        img: ``(B, 3, H, W)`` in ``[0, 1]``.
        scale_range: Range of the noise scale, drawn per image.
        gray_prob: Per-image probability of gray noise.

    Returns:
        Noisy batch in ``[0, 1]``.
    """
    b = img.size(0)
    scale = torch.rand(b, dtype=img.dtype, device=img.device) * (
        scale_range[1] - scale_range[0]) + scale_range[0]
    gray_noise = (torch.rand(b, dtype=img.dtype, device=img.device) < gray_prob).float()
    return torch.clamp(img + poisson_noise(img, scale, gray_noise), 0, 1)
