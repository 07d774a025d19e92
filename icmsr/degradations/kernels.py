"""Per-image blur kernels of the Real-ESRGAN pipeline, sampled with BasicSR's functions.

The sampling follows BasicSR's ``RealESRGANDataset.__getitem__`` draw for draw:
for every image a first-stage kernel, a second-stage kernel and a final sinc
kernel (or a unit pulse), each zero-padded to ``pad_to x pad_to`` so a batch
stacks into one tensor. The random draws use Python's ``random`` and numpy's
global state exactly as BasicSR does; callers make them reproducible with
:func:`icmsr.degradations.seeding.borrowed_global_rngs`.
"""
import math
import random
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from basicsr.data.degradations import circular_lowpass_kernel, random_mixed_kernels

KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso',
                'plateau_iso', 'plateau_aniso')


def _pad(kernel: np.ndarray, pad_to: int) -> np.ndarray:
    """Zero-pad a square odd kernel to ``pad_to x pad_to`` (centred)."""
    pad = (pad_to - kernel.shape[0]) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad))) if pad > 0 else kernel


def sample_blur_kernel(kernel_sizes: Sequence[int], kernel_list: Sequence[str],
                       kernel_prob: Sequence[float], sigma_range: Sequence[float],
                       betag_range: Sequence[float], betap_range: Sequence[float],
                       sinc_prob: float, pad_to: int) -> np.ndarray:
    """Sample one blur kernel of a degradation stage.

    With probability ``sinc_prob`` a circular low-pass (sinc) kernel with
    cut-off in ``[pi/3, pi]`` (size < 13) or ``[pi/5, pi]`` (size >= 13), else a
    Gaussian-family kernel from ``random_mixed_kernels`` with rotation in
    ``[-pi, pi]`` and no multiplicative noise.

    Args:
        kernel_sizes: Odd sizes to choose from uniformly.
        kernel_list: Kernel types (see :data:`KERNEL_TYPES`).
        kernel_prob: Probability of each type.
        sigma_range: Range of both standard deviations.
        betag_range: Shape range of generalized Gaussian kernels.
        betap_range: Shape range of plateau kernels.
        sinc_prob: Probability of a sinc kernel instead.
        pad_to: Output size (odd, >= every kernel size).

    Returns:
        float64 array ``(pad_to, pad_to)`` summing to 1.
    """
    kernel_size = random.choice(list(kernel_sizes))
    if np.random.uniform() < sinc_prob:
        low = np.pi / 3 if kernel_size < 13 else np.pi / 5
        omega_c = np.random.uniform(low, np.pi)
        kernel = circular_lowpass_kernel(omega_c, kernel_size, pad_to=False)
    else:
        kernel = random_mixed_kernels(
            list(kernel_list), list(kernel_prob), kernel_size,
            list(sigma_range), list(sigma_range), [-math.pi, math.pi],
            list(betag_range), list(betap_range), noise_range=None)
    return _pad(kernel, pad_to)


def sample_final_sinc_kernel(kernel_sizes: Sequence[int], final_sinc_prob: float,
                             pad_to: int) -> np.ndarray:
    """Sample the final sinc kernel (cut-off in ``[pi/3, pi]``) or a unit pulse.

    Args:
        kernel_sizes: Odd sizes to choose from uniformly.
        final_sinc_prob: Probability of a sinc kernel; otherwise the pulse,
            which leaves the image unchanged.
        pad_to: Output size.

    Returns:
        float64 array ``(pad_to, pad_to)`` summing to 1.
    """
    if np.random.uniform() < final_sinc_prob:
        kernel_size = random.choice(list(kernel_sizes))
        omega_c = np.random.uniform(np.pi / 3, np.pi)
        return circular_lowpass_kernel(omega_c, kernel_size, pad_to=pad_to)
    pulse = np.zeros((pad_to, pad_to))
    pulse[pad_to // 2, pad_to // 2] = 1.0
    return pulse


def sample_batch_kernels(batch_size: int, kernel_sizes: Sequence[int],
                         first: Dict, second: Dict, final_sinc_prob: float,
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample the three kernels of every image, in BasicSR's per-image order.

    Args:
        batch_size: Number of images.
        kernel_sizes: Odd kernel sizes shared by all stages.
        first: Keyword arguments of :func:`sample_blur_kernel` for stage 1
            (``kernel_list, kernel_prob, sigma_range, betag_range, betap_range,
            sinc_prob``).
        second: The same for stage 2.
        final_sinc_prob: Probability of the final sinc filter per image.

    Returns:
        ``(kernel1, kernel2, sinc_kernel)``, each float32 ``(B, K, K)`` on CPU
        with ``K = max(kernel_sizes)``.
    """
    pad_to = max(kernel_sizes)
    k1, k2, k3 = [], [], []
    for _ in range(batch_size):
        k1.append(sample_blur_kernel(kernel_sizes, pad_to=pad_to, **first))
        k2.append(sample_blur_kernel(kernel_sizes, pad_to=pad_to, **second))
        k3.append(sample_final_sinc_kernel(kernel_sizes, final_sinc_prob, pad_to))
    return tuple(torch.from_numpy(np.stack(k)).float() for k in (k1, k2, k3))
