"""Tests of the batched Real-ESRGAN degradation (icmsr.degradations)."""
import glob
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import icmsr  # noqa: F401  (applies the basicsr import shim)
from basicsr.utils import USMSharp
from basicsr.utils.img_process_util import filter2D
from icmsr.degradations import RealESRGANDegradation, quantize_8bit
from icmsr.degradations.kernels import sample_batch_kernels
from icmsr.degradations.seeding import borrowed_global_rngs
from icmsr.registry import MODELS
from realsr_data import realsr_root

REALSR_HR = os.path.join(realsr_root(), 'test_HR')
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def _astronaut(size: int = 128) -> torch.Tensor:
    """A real photo, ``(2, 3, size, size)`` (the second one mirrored)."""
    skimage_data = pytest.importorskip('skimage.data')
    img = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1)[None].float() / 255
    img = F.interpolate(img, size=(size, size), mode='area')
    return torch.cat([img, img.flip(-1)])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / ((a - b) ** 2).mean(dim=(1, 2, 3)))


def test_defaults_are_osediff_params_realesrgan():
    d = RealESRGANDegradation()
    types = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')
    probs = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    assert d.scale == 4
    assert d.kernel_sizes == (7, 9, 11, 13, 15, 17, 19, 21)
    assert d.stage1_kernel == dict(kernel_list=types, kernel_prob=probs, sigma_range=(0.2, 3),
                                   betag_range=(0.5, 4), betap_range=(1, 2), sinc_prob=0.1)
    assert d.stage2_kernel == dict(kernel_list=types, kernel_prob=probs, sigma_range=(0.2, 1.5),
                                   betag_range=(0.5, 4), betap_range=(1, 2), sinc_prob=0.1)
    assert d.stage1 == dict(resize_prob=(0.2, 0.7, 0.1), resize_range=(0.15, 1.5),
                            gaussian_noise_prob=0.5, noise_range=(1, 30),
                            poisson_scale_range=(0.05, 3), gray_noise_prob=0.4,
                            jpeg_range=(30, 95))
    assert d.stage2 == dict(resize_prob=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
                            gaussian_noise_prob=0.5, noise_range=(1, 25),
                            poisson_scale_range=(0.05, 2.5), gray_noise_prob=0.4,
                            jpeg_range=(30, 95))
    assert d.second_blur_prob == 0.8 and d.final_sinc_prob == 0.8
    assert d.use_usm is False and d.resize_back is True
    assert set(d.resize_modes) == set(d.resize_back_modes) == {'area', 'bilinear', 'bicubic'}
    # No parameters or buffers: nothing leaks into optimizers or checkpoints.
    assert list(d.parameters()) == [] and d.state_dict() == {}


@pytest.mark.parametrize('device', DEVICES)
def test_shapes_ranges_and_8bit_quantisation(device):
    gt = _astronaut(128).to(device)
    d = MODELS.build(dict(type='RealESRGANDegradation'))
    for seed in range(3):
        out = d(gt, generator=torch.Generator().manual_seed(seed))
        assert out['gt'] is gt
        assert out['lq'].shape == (2, 3, 32, 32) and out['lq_up'].shape == (2, 3, 128, 128)
        for key in ('lq', 'lq_up'):
            x = out[key]
            assert x.dtype == torch.float32 and x.device.type == device
            assert x.min() >= 0 and x.max() <= 1
            assert torch.equal(x * 255, (x * 255).round()), f'{key} is not on the 8-bit grid'
    assert 'lq_up' not in RealESRGANDegradation(resize_back=False)(gt)


def test_same_seed_same_lq_different_seed_different_lq():
    gt = _astronaut(128)
    d = RealESRGANDegradation()
    runs = [d(gt, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0]['lq'], runs[1]['lq'])
    assert torch.equal(runs[0]['lq_up'], runs[1]['lq_up'])
    assert (runs[0]['lq'] - runs[2]['lq']).abs().mean() > 1e-3
    # The module's own generator: same seed -> same stream, and the stream advances.
    a, b = RealESRGANDegradation(seed=3), RealESRGANDegradation(seed=3)
    first, second = a(gt)['lq'], a(gt)['lq']
    assert torch.equal(first, b(gt)['lq']) and not torch.equal(first, second)


def test_global_rng_states_are_untouched():
    gt = _astronaut(128)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    RealESRGANDegradation()(gt, generator=torch.Generator().manual_seed(0))
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def test_lq_differs_measurably_from_plain_bicubic_but_keeps_content():
    gt = _astronaut(128)
    other = gt.flip(-2)  # same statistics, different content
    d = RealESRGANDegradation()
    bicubic = F.interpolate(gt, size=(32, 32), mode='bicubic', antialias=True).clamp(0, 1)
    bicubic_other = F.interpolate(other, size=(32, 32), mode='bicubic', antialias=True).clamp(0, 1)
    for seed in range(3):
        lq = d(gt, generator=torch.Generator().manual_seed(seed))['lq']
        psnr = _psnr(lq, bicubic)
        assert (psnr < 30).all(), f'seed {seed}: LQ too close to a clean bicubic downscale ({psnr})'
        assert (psnr > _psnr(lq, bicubic_other) + 2).all(), 'LQ lost the image content'


@pytest.mark.skipif(not os.path.isdir(REALSR_HR), reason=f'{REALSR_HR} not found (real test data)')
def test_real_512_gt_gap_to_bicubic():
    import cv2
    path = sorted(glob.glob(os.path.join(REALSR_HR, '*.png')))[0]
    hr = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)[:512, :512]
    gt = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)[None].float() / 255
    out = RealESRGANDegradation()(gt, generator=torch.Generator().manual_seed(0))
    assert out['lq'].shape == (1, 3, 128, 128)
    bicubic = F.interpolate(gt, scale_factor=0.25, mode='bicubic', antialias=True).clamp(0, 1)
    assert _psnr(out['lq'], bicubic).item() < 35


def test_usm_sharpens_the_gt_with_the_configured_window_and_strength():
    gt = _astronaut(128)
    for usm, ref in ((dict(), USMSharp()(gt)),
                     (dict(weight=1.0, threshold=5, radius=20), USMSharp(21)(gt, 1.0, 5))):
        out = RealESRGANDegradation(usm=usm)(gt, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out['gt'], ref)
        assert (out['gt'] - gt).abs().max() > 0.05  # it does sharpen
    with pytest.raises(ValueError, match='usm.radius'):  # 101-px window, reflect-padded by 50
        RealESRGANDegradation(usm=dict(radius=100), kernel_sizes=(3,),
                              stage1=dict(resize_range=(1, 1)))(torch.rand(1, 3, 48, 48))


def test_kernels_per_image_normalised_and_reproducible():
    cfg = RealESRGANDegradation()
    args = (4, cfg.kernel_sizes, cfg.stage1_kernel, cfg.stage2_kernel, 1.0)
    with borrowed_global_rngs(5, torch.device('cpu')):
        k1, k2, sinc = sample_batch_kernels(*args)
    with borrowed_global_rngs(5, torch.device('cpu')):
        again = sample_batch_kernels(*args)
    for k in (k1, k2, sinc):
        assert k.shape == (4, 21, 21) and k.dtype == torch.float32
        assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(4), atol=1e-5)
        assert not torch.equal(k[0], k[1]), 'kernels must differ between images'
    assert all(torch.equal(a, b) for a, b in zip((k1, k2, sinc), again))
    with borrowed_global_rngs(5, torch.device('cpu')):
        *_, pulse = sample_batch_kernels(2, cfg.kernel_sizes, cfg.stage1_kernel,
                                         cfg.stage2_kernel, 0.0)
    assert pulse[:, 10, 10].eq(1).all() and pulse.sum() == 2


def test_quantize_8bit():
    x = torch.tensor([-0.2, 0.0, 0.4 / 255, 0.302, 1.4])
    assert torch.equal(quantize_8bit(x) * 255, torch.tensor([0.0, 0.0, 0.0, 77.0, 255.0]))


def test_clear_input_errors():
    d = RealESRGANDegradation()
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        d(torch.rand(3, 128, 128))
    with pytest.raises(TypeError, match='float'):
        d(torch.zeros(1, 3, 128, 128, dtype=torch.uint8))
    with pytest.raises(ValueError, match='divisible by scale'):
        d(torch.rand(1, 3, 130, 128))
    with pytest.raises(ValueError, match='too small'):
        d(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r'degradation\.stage1\.kernel_list'):
        RealESRGANDegradation(stage1=dict(kernel_list=('iso', 'bogus'), kernel_prob=(0.5, 0.5)))
    with pytest.raises(KeyError, match=r'degradation\.stage2: unknown keys \[.noise_rang.\]'):
        RealESRGANDegradation(stage2=dict(noise_rang=(1, 2)))


def _basicsr_feed_data(gt: torch.Tensor, d: RealESRGANDegradation) -> torch.Tensor:
    """Reference: BasicSR's dataset kernel draws + ``feed_data`` steps, called literally."""
    import math
    from basicsr.data.degradations import (circular_lowpass_kernel, random_add_gaussian_noise_pt,
                                           random_add_poisson_noise_pt, random_mixed_kernels)
    from basicsr.utils import DiffJPEG
    types = list(d.stage1_kernel['kernel_list'])
    probs = list(d.stage1_kernel['kernel_prob'])

    def blur_kernel(sigma):
        size = random.choice(list(range(7, 22, 2)))
        if np.random.uniform() < 0.1:
            omega = np.random.uniform(np.pi / 3 if size < 13 else np.pi / 5, np.pi)
            k = circular_lowpass_kernel(omega, size, pad_to=False)
        else:
            k = random_mixed_kernels(types, probs, size, sigma, sigma, [-math.pi, math.pi],
                                     [0.5, 4], [1, 2], noise_range=None)
        pad = (21 - size) // 2
        return np.pad(k, ((pad, pad), (pad, pad)))

    ks = [[], [], []]
    for _ in range(gt.shape[0]):
        ks[0].append(blur_kernel([0.2, 3]))
        ks[1].append(blur_kernel([0.2, 1.5]))
        if np.random.uniform() < 0.8:
            size = random.choice(list(range(7, 22, 2)))
            ks[2].append(circular_lowpass_kernel(np.random.uniform(np.pi / 3, np.pi), size, pad_to=21))
        else:
            pulse = np.zeros((21, 21))
            pulse[10, 10] = 1
            ks[2].append(pulse)
    k1, k2, sinc = (torch.FloatTensor(np.stack(k)) for k in ks)
    jpeger = DiffJPEG(differentiable=False)
    h, w = gt.shape[-2:]

    def scale_of(prob, rng):
        kind = random.choices(['up', 'down', 'keep'], prob)[0]
        return np.random.uniform(1, rng[1]) if kind == 'up' else (
            np.random.uniform(rng[0], 1) if kind == 'down' else 1)

    def noise(out, sig, pois):
        if np.random.uniform() < 0.5:
            return random_add_gaussian_noise_pt(out, sigma_range=sig, clip=True, rounds=False, gray_prob=0.4)
        return random_add_poisson_noise_pt(out, scale_range=pois, gray_prob=0.4, clip=True, rounds=False)

    def jpeg(out):
        q = out.new_zeros(out.size(0)).uniform_(30, 95)
        return jpeger(torch.clamp(out, 0, 1), quality=q).contiguous()

    out = filter2D(gt, k1)
    out = F.interpolate(out, scale_factor=scale_of([0.2, 0.7, 0.1], [0.15, 1.5]),
                        mode=random.choice(['area', 'bilinear', 'bicubic']))
    out = jpeg(noise(out, [1, 30], [0.05, 3]))
    if np.random.uniform() < 0.8:
        out = filter2D(out, k2)
    s = scale_of([0.3, 0.4, 0.3], [0.3, 1.2])
    out = F.interpolate(out, size=(int(h / 4 * s), int(w / 4 * s)),
                        mode=random.choice(['area', 'bilinear', 'bicubic']))
    out = noise(out, [1, 25], [0.05, 2.5])
    if np.random.uniform() < 0.5:
        out = F.interpolate(out, size=(h // 4, w // 4), mode=random.choice(['area', 'bilinear', 'bicubic']))
        out = jpeg(filter2D(out, sinc))
    else:
        out = jpeg(out)
        out = F.interpolate(out, size=(h // 4, w // 4), mode=random.choice(['area', 'bilinear', 'bicubic']))
        out = filter2D(out, sinc)
    return torch.clamp((out * 255.0).round(), 0, 255) / 255.


def test_pipeline_is_basicsr_feed_data_draw_for_draw():
    from icmsr.degradations.seeding import draw_seed
    gt = _astronaut(128)
    d = RealESRGANDegradation()
    for s in range(3):
        ours = d(gt, generator=torch.Generator().manual_seed(s))['lq']
        with borrowed_global_rngs(draw_seed(torch.Generator().manual_seed(s)), gt.device):
            ref = _basicsr_feed_data(gt, d)
        assert torch.equal(ours, ref), f'seed {s}'


def test_borrowed_rngs_restore_states_even_on_error():
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    with pytest.raises(RuntimeError, match='boom'):
        with borrowed_global_rngs(123, torch.device('cpu')):
            inside = (random.random(), np.random.rand(), torch.rand(1))
            raise RuntimeError('boom')
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])
    with borrowed_global_rngs(123, torch.device('cpu')):
        assert (random.random(), np.random.rand()) == inside[:2]
        assert torch.equal(torch.rand(1), inside[2])
