"""The NIQE scorer: pyiqa's ``calculate_niqe`` values, the same on every CPU.

The Y channel is exact integer arithmetic (``niqe.luma_8bit``): pyiqa's float32
product leaves its x.5 ties to the CPU's rounding, which is what moved RealSR's
Canon_001 by 0.017 on an AVX2 machine. Off ties our value is pyiqa's.
"""
import os
from fractions import Fraction

import numpy as np
import pytest
import torch

from icmsr.evaluation.niqe import luma_8bit, niqe_8bit
from icmsr.evaluation.folder_eval import read_image
from icmsr.evaluation.scorers import NIQEScorer, basicsr_niqe_params
from realsr_data import realsr_root

ROOT = realsr_root()
HAVE_REALSR = os.path.isdir(os.path.join(ROOT, 'results_osediff'))


@pytest.fixture(scope='module')
def params():
    return basicsr_niqe_params()


def _ties(img):
    """Pixels whose exact Y (255 * YIQ luma) is an x.5 tie."""
    q = (img * 255).round().long()
    return (299 * q[:, 0] + 587 * q[:, 1] + 114 * q[:, 2]) % 1000 == 500


def _random_8bit(shape, seed, ties=False):
    """Random 8-bit RGB with a smooth band; without ``ties`` no pixel is an x.5 tie."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 256, shape, generator=g)
    q[..., :shape[-2] // 3, :] = torch.linspace(0, 255, shape[-1]).round().long()
    img = q.float() / 255
    if not ties:  # one code more (or less) of blue moves the exact Y by 0.114
        tie = _ties(img)
        blue = q[:, 2]
        blue[tie] = torch.where(blue[tie] < 255, blue[tie] + 1, blue[tie] - 1)
        img = q.float() / 255
        assert not _ties(img).any()
    return img


def _pyiqa_y(img):
    from pyiqa.utils.color_util import to_y_channel
    return to_y_channel(img, 255, 'yiq').round().double()


def test_luma_is_exact_and_equals_pyiqa_off_ties():
    img = _random_8bit((2, 3, 120, 160), 3, ties=True)
    tie = _ties(img)
    assert tie.sum() > 10  # the check below covers ties
    q = (img * 255).round().long().numpy()
    # Independent: Python's exact rationals, round() sends halves to even.
    expected = np.vectorize(lambda r, g, b: round(Fraction(299 * r + 587 * g + 114 * b, 1000)))(
        q[:, 0], q[:, 1], q[:, 2])
    ours = luma_8bit(img)
    assert ours.dtype == torch.float64 and torch.equal(ours[:, 0], torch.from_numpy(
        expected).double())
    assert torch.equal(ours[:, 0][~tie], _pyiqa_y(img)[:, 0][~tie])


@pytest.mark.parametrize('shape,crop', [((2, 3, 200, 290), 0), ((1, 3, 230, 200), 5)])
def test_matches_pyiqa_on_random_images(params, shape, crop):
    from pyiqa.archs.niqe_arch import calculate_niqe
    img = _random_8bit(shape, sum(shape))
    ref = calculate_niqe(img, crop, True, 'yiq', params['mu'], params['cov']).reshape(-1)
    assert torch.equal(niqe_8bit(img, params['mu'], params['cov'], crop), ref)


def test_scorer_uses_it_and_rejects_small_images(params):
    img = _random_8bit((1, 3, 100, 100), 7)
    from pyiqa.archs.niqe_arch import calculate_niqe
    ref = float(calculate_niqe(img, 0, True, 'yiq', params['mu'], params['cov']))
    assert NIQEScorer()(img)[0] == ref
    with pytest.raises(ValueError, match='at least 96x96'):
        NIQEScorer()(torch.rand(1, 3, 64, 200))


@pytest.mark.skipif(not HAVE_REALSR, reason=f'RealSR data not found at {ROOT}')
def test_float32_luma_made_niqe_depend_on_the_cpu(params):
    """The AVX2 report: Canon_001 5.691741 there. Two float32 evaluations of pyiqa's
    luma (each op IEEE-rounded, so these emulations run alike everywhere) resolve
    its x.5 ties differently and move NIQE by ~0.017; the exact luma has no such freedom."""
    torch.set_num_threads(1)
    img = read_image(os.path.join(ROOT, 'results_osediff', 'Canon_001_LR4.png'))
    w = [0.299, 0.587, 0.114]  # pyiqa's weights, stored as float32
    r, g, b = img.double()
    w32 = [float(torch.tensor(v)) for v in w]
    f32 = lambda t: t.float().double()  # noqa: E731
    # Left to right with a rounding after every product and sum (no FMA) ...
    plain = f32(f32(f32(r * w32[0]) + f32(g * w32[1])) + f32(b * w32[2]))
    # ... and with fused multiply-adds (one rounding per multiply-add).
    fused = f32(f32(f32(r * w32[0]) + g * w32[1]) + b * w32[2])
    ys = {k: f32(v * 255).round()[None, None] for k, v in (('plain', plain), ('fused', fused))}
    tie = _ties(img[None])[:, None]
    assert torch.equal(ys['plain'][~tie], ys['fused'][~tie])  # they differ only on ties
    assert (ys['plain'] != ys['fused']).sum() > 10
    from pyiqa.archs.niqe_arch import niqe
    mu, cov = params['mu'][None], params['cov'][None]
    values = {k: float(niqe(y, mu, cov)) for k, y in ys.items()}
    assert values['plain'] == pytest.approx(5.691741, abs=1e-6)  # the AVX2 machine's value
    assert abs(values['plain'] - values['fused']) > 0.015
    ours = NIQEScorer()(img[None])[0]
    assert ours == float(niqe(luma_8bit(img[None]), mu, cov))
