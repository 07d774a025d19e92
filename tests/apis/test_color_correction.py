"""Colour correction checked against an independent NumPy/SciPy computation."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from icmsr.utils.color_correction import adain_color_fix, color_fix, wavelet_color_fix


def _rand(seed, shape):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


def test_adain_matches_numpy_statistics():
    img = _rand(0, (2, 3, 24, 20)) * 0.5 + 0.1
    ref = _rand(1, (2, 3, 24, 20)) * 0.3 + 0.4
    out = adain_color_fix(img, ref).numpy()
    i, r = img.numpy().astype(np.float64), ref.numpy().astype(np.float64)
    # Independent formula: standardise each channel, rescale to the reference moments.
    im, istd = i.mean((2, 3), keepdims=True), np.sqrt(i.var((2, 3), ddof=1, keepdims=True) + 1e-5)
    rm, rstd = r.mean((2, 3), keepdims=True), np.sqrt(r.var((2, 3), ddof=1, keepdims=True) + 1e-5)
    expected = np.clip((i - im) / istd * rstd + rm, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # The output carries the reference's per-channel means (no clipping happened here).
    np.testing.assert_allclose(out.mean((2, 3)), r.mean((2, 3)), atol=1e-4)


def _numpy_wavelet_low(x: np.ndarray, levels: int) -> np.ndarray:
    """Low band via explicit dilated kernels and scipy's edge-replicating correlation."""
    k1 = np.array([0.25, 0.5, 0.25])
    low = x.astype(np.float64)
    for i in range(levels):
        r = 2 ** i
        k = np.zeros((2 * r + 1, 2 * r + 1))
        k[::r, ::r] = np.outer(k1, k1)
        low = np.stack([ndimage.correlate(c, k, mode='nearest') for c in low])
    return low


def test_wavelet_matches_scipy_reference():
    img = _rand(2, (3, 40, 36))
    ref = _rand(3, (3, 40, 36))
    out = wavelet_color_fix(img, ref, levels=4).numpy()
    i, r = img.numpy(), ref.numpy()
    expected = np.clip(i - _numpy_wavelet_low(i, 4) + _numpy_wavelet_low(r, 4), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_wavelet_takes_colour_from_reference_and_detail_from_image():
    # Image: reddish with fine checkerboard detail; reference: a flat blue LQ of a quarter size.
    img = torch.zeros(1, 3, 64, 64)
    img[:, 0] = 0.7
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2).float() * 0.1
    img = img + checker
    ref = torch.zeros(1, 3, 16, 16)
    ref[:, 2] = 0.6
    ref[:, 0] = 0.1
    out = wavelet_color_fix(img, ref)
    means = out.mean((2, 3))[0]
    assert means[2] > 0.5 and means[0] < 0.3, means
    # The checkerboard survives: neighbouring pixels still differ by about 0.1.
    assert (out[0, 0, 10, 10] - out[0, 0, 10, 11]).abs() > 0.05


def test_identity_when_reference_is_image_and_mode_none():
    img = _rand(4, (1, 3, 16, 16))
    assert torch.allclose(wavelet_color_fix(img, img), img, atol=1e-6)
    assert torch.allclose(adain_color_fix(img, img), img, atol=1e-5)
    assert color_fix(img, img, 'none') is img
    with pytest.raises(ValueError, match='adain'):
        color_fix(img, img, 'hist')
