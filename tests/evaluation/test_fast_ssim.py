"""The separable SSIM gives pyiqa's ``ssim`` values (pyiqa is the reference here).

pyiqa's float64 SSIM costs ~1.4 s of CPU per 512x512 image, so the reference is
run on small random images for every option and on two RealSR pairs only.
"""
import os

import pytest
import torch

from icmsr.evaluation.fast_ssim import FastSSIMScorer, gaussian_1d, ssim_y, window_1d
from icmsr.evaluation.folder_eval import read_image
from icmsr.evaluation.scorers import METRIC_INFO, build_scorers
from realsr_data import realsr_root

ROOT = realsr_root()
# Measured difference to pyiqa ~1e-10; 1e-8 fails if the window's float32 total
# is not matched (that alone moves RealSR values by up to 4e-7).
TOL = 1e-8


def _pyiqa(**opts):
    import pyiqa
    return pyiqa.create_metric('ssim', device='cpu', **opts)


def _pair(shape, seed, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(shape, generator=g)
    # Smooth regions too, where SSIM's variance terms are small and rounding-sensitive.
    gt[..., : shape[-2] // 2, :] = gt[..., : shape[-2] // 2, :].mean()
    pred = (gt + noise * torch.randn(shape, generator=g)).clamp(0, 1)
    return pred, gt


@pytest.mark.parametrize('opts', [
    dict(test_y_channel=True, color_space='ycbcr', crop_border=0),
    dict(test_y_channel=True, color_space='yiq'),
    dict(test_y_channel=False),
    dict(test_y_channel=True, color_space='ycbcr', crop_border=4),
])
def test_matches_pyiqa_on_random_images(opts):
    pred, gt = _pair((3, 3, 48, 70), seed=1)
    ref = _pyiqa(**opts)(pred, gt).reshape(-1).tolist()
    ours = FastSSIMScorer(**opts)(pred, gt)
    assert len(ours) == 3
    assert ours == pytest.approx(ref, abs=TOL, rel=0)
    # The check can fail: images differ, so values differ well beyond TOL.
    assert max(ours) - min(ours) > 1e-3


def test_matches_pyiqa_with_downsample():
    # min side 400 -> pool factor round(400 / 256) = 2, as in MATLAB's reference code.
    pred, gt = _pair((1, 3, 400, 416), seed=2)
    ref = float(_pyiqa(downsample=True, color_space='ycbcr')(pred, gt))
    ours = FastSSIMScorer(downsample=True, color_space='ycbcr')(pred, gt)[0]
    assert ours == pytest.approx(ref, abs=TOL, rel=0)
    assert abs(ours - FastSSIMScorer(color_space='ycbcr')(pred, gt)[0]) > 1e-3


def test_window_is_the_gaussian_factor():
    from pyiqa.matlab_utils import fspecial
    g = gaussian_1d()
    assert float(g.sum()) == pytest.approx(1.0, abs=1e-15)
    assert torch.allclose(torch.outer(g, g), fspecial(11, 1.5, 1)[0, 0].double(), atol=1e-8)
    # window_1d's outer product has the float32 window's total, to float64 precision.
    w = window_1d()
    assert float(torch.outer(w, w).sum()) == pytest.approx(
        float(fspecial(11, 1.5, 1).double().sum()), abs=1e-15)


def test_identical_images_score_one_and_bounds():
    _, gt = _pair((2, 3, 40, 40), seed=3)
    assert FastSSIMScorer(color_space='ycbcr')(gt, gt) == pytest.approx([1.0, 1.0], abs=1e-12)
    y = torch.rand(1, 1, 30, 30, dtype=torch.float64) * 255
    assert -1.0 <= float(ssim_y(y, 255 - y)) <= 1.0


def test_errors_a_user_would_hit():
    scorer = FastSSIMScorer()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match='GT image'):
        scorer(x)
    with pytest.raises(ValueError, match='one shape'):
        scorer(x, torch.rand(1, 3, 32, 31))
    with pytest.raises(ValueError, match='at least 11x11'):
        scorer(torch.rand(1, 3, 8, 32), torch.rand(1, 3, 8, 32))


def test_suite_ssim_scorer_is_the_fast_one_with_the_table_settings():
    scorer = build_scorers(['ssim'], device='cpu')['ssim']
    assert isinstance(scorer, FastSSIMScorer)
    assert (scorer.test_y_channel, scorer.color_space, scorer.crop_border) == (True, 'ycbcr', 0)
    assert METRIC_INFO['ssim'].options['color_space'] == 'ycbcr'
    cropped = build_scorers(['ssim'], device='cpu', options={'ssim': {'crop_border': 4}})['ssim']
    assert cropped.crop_border == 4


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, 'test_HR')),
                    reason=f'RealSR data not found at {ROOT}')
@pytest.mark.parametrize('key', ['Canon_001_LR4', 'Nikon_023_LR4'])
def test_matches_pyiqa_on_realsr(key):
    torch.set_num_threads(1)
    pred = read_image(os.path.join(ROOT, 'results_osediff', key + '.png'))[None]
    gt = read_image(os.path.join(ROOT, 'test_HR', key + '.png'))[None]
    opts = dict(test_y_channel=True, color_space='ycbcr', crop_border=0)
    ref = float(_pyiqa(**opts)(pred, gt))
    assert FastSSIMScorer(**opts)(pred, gt)[0] == pytest.approx(ref, abs=TOL, rel=0)
