"""FFT evaluation of BasicSR's ``filter2D`` for large kernels.

``basicsr.utils.img_process_util.filter2D`` reflect-pads by ``k // 2`` and
cross-correlates with a per-image (or shared) ``k x k`` kernel using a direct
(grouped) convolution, whose cost grows with ``k^2``. For the 51x51 Gaussian of
unsharp masking that is the dominant cost on CPU; through the FFT the cost no
longer depends on ``k``. Up to float32 rounding (about 1e-6 on ``[0, 1]``
images) the result is the same.
"""
import torch
import torch.nn.functional as F


def _fast_fft_size(n: int) -> int:
    """Smallest integer ``>= n`` whose only prime factors are 2, 3 and 5."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def filter2d_fft(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Reflect-padded cross-correlation of every channel with a kernel, via the FFT.

    Args:
        img: ``(B, C, H, W)`` float tensor; ``H, W > k // 2``.
        kernel: ``(1, k, k)`` (shared) or ``(B, k, k)`` (per image), ``k`` odd,
            on ``img``'s device.

    Returns:
        Tensor of ``img``'s shape and dtype, equal to BasicSR's
        ``filter2D(img, kernel)`` up to float rounding.
    """
    k = kernel.shape[-1]
    if k % 2 == 0 or kernel.shape[-2] != k:
        raise ValueError(f'kernel must be square with odd size, got {tuple(kernel.shape)}.')
    b, _, h, w = img.shape
    if kernel.shape[0] not in (1, b):
        raise ValueError(f'kernel batch {kernel.shape[0]} must be 1 or match the image batch {b}.')
    pad = k // 2
    x = F.pad(img, (pad, pad, pad, pad), mode='reflect')
    # Any FFT size >= the padded size avoids wrap-around for the kept outputs
    # (output i reads inputs i .. i+k-1 <= H+k-2), so pick a fast one.
    size = (_fast_fft_size(h + 2 * pad), _fast_fft_size(w + 2 * pad))
    spec_x = torch.fft.rfft2(x.float(), s=size)
    spec_k = torch.fft.rfft2(kernel.float(), s=size).unsqueeze(1)
    # Correlation = multiplication by the conjugate spectrum of the kernel.
    out = torch.fft.irfft2(spec_x * spec_k.conj(), s=size)
    return out[..., :h, :w].to(img.dtype).contiguous()
