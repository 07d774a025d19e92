"""The separable NIQE gives pyiqa's ``calculate_niqe`` values (pyiqa is the reference)."""
import os

import pytest
import torch

from icmsr.evaluation.fast_niqe import calculate_niqe_fast, normalize_with_gauss
from icmsr.evaluation.folder_eval import read_image
from icmsr.evaluation.scorers import NIQEScorer, basicsr_niqe_params
from realsr_data import realsr_root

ROOT = realsr_root()
# Measured difference ~3e-8 (the float32 rounding of pyiqa's individual window taps).
TOL = 1e-6


@pytest.fixture(scope='module')
def params():
    return basicsr_niqe_params()


def _reference(img, params, crop_border=0):
    from pyiqa.archs.niqe_arch import calculate_niqe
    return calculate_niqe(img, crop_border, True, 'yiq', params['mu'], params['cov'])


def test_normalization_matches_pyiqa():
    from pyiqa.archs.func_util import normalize_img_with_gauss
    img = (torch.rand(2, 1, 40, 53, dtype=torch.float64) * 255).round()
    img[..., :20, :] = 128.0  # flat: the deviation's square root is most sensitive here
    ref = normalize_img_with_gauss(img, padding='replicate')
    assert torch.allclose(normalize_with_gauss(img), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize('shape,crop', [((2, 3, 200, 290), 0), ((1, 3, 230, 200), 5)])
def test_matches_pyiqa_on_random_images(params, shape, crop):
    g = torch.Generator().manual_seed(sum(shape))
    img = torch.rand(shape, generator=g)
    # A smooth gradient on part of the image, so features vary between blocks.
    img[..., :100, :] = torch.linspace(0, 1, shape[-1])
    ref = _reference(img, params, crop).reshape(-1)
    ours = calculate_niqe_fast(img, crop, params['mu'], params['cov'])
    assert ours.tolist() == pytest.approx(ref.tolist(), abs=TOL, rel=0)


def test_scorer_uses_it_and_rejects_small_images(params):
    img = torch.rand(1, 3, 100, 100)
    assert NIQEScorer()(img)[0] == pytest.approx(float(_reference(img, params)), abs=TOL)
    with pytest.raises(ValueError, match='at least 96x96'):
        NIQEScorer()(torch.rand(1, 3, 64, 200))


@pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, 'results_osediff')),
                    reason=f'RealSR data not found at {ROOT}')
@pytest.mark.parametrize('key', ['Canon_006_LR4', 'Nikon_023_LR4'])
def test_matches_pyiqa_on_realsr(params, key):
    torch.set_num_threads(1)
    img = read_image(os.path.join(ROOT, 'results_osediff', key + '.png'))[None]
    ref = float(_reference(img, params))
    assert NIQEScorer()(img)[0] == pytest.approx(ref, abs=TOL, rel=0)
