"""Tile layout and blending: coverage, exactness, seam-free transitions, bounded tile size."""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from icmsr.utils.tile_context import WholeImageContext, core_bounds
from icmsr.utils.tiling import blend_window_1d, core_window_1d, tile_starts, tiled_apply


@pytest.mark.parametrize('length,tile,overlap', [(100, 32, 8), (64, 64, 16), (65, 64, 16), (513, 96, 32)])
def test_tile_starts_cover_and_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap  # neighbours overlap at least by `overlap`
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all()


@pytest.mark.parametrize('scale,fn', [
    (1 / 8, lambda t: F.avg_pool2d(t, 8)),
    (8, lambda t: F.interpolate(t, scale_factor=8, mode='nearest')),
    (1, lambda t: t * 2 + 1),
])
def test_local_ops_are_reproduced_exactly(scale, fn):
    x = torch.rand(1, 3, 80, 112) if scale < 1 else torch.rand(1, 3, 20, 28)
    tile = 32 if scale < 1 else 8
    out = tiled_apply(x, fn, tile=tile, overlap=tile // 2, scale=scale)
    assert torch.allclose(out, fn(x), atol=1e-6)


def test_single_tile_is_a_plain_call():
    x = torch.rand(1, 4, 16, 16)
    calls = []
    out = tiled_apply(x, lambda t: calls.append(t.shape) or t * 3, tile=16, overlap=4)
    assert calls == [x.shape] and torch.equal(out, x * 3)


def _max_step(img: torch.Tensor) -> float:
    return img.diff(dim=-1).abs().max().item()


@pytest.mark.parametrize('mode', ['gaussian', 'cosine'])
def test_no_seam_when_tiles_disagree(mode):
    # A "model" whose output is off by a different constant on every tile (the worst
    # case for seams). On a smooth ramp the blended output must stay smooth, while
    # plain averaging shows a hard step at tile borders: the test can fail.
    ramp = torch.linspace(0, 1, 200).repeat(1, 1, 40, 1)
    offsets = iter(torch.linspace(-0.2, 0.2, 64))

    def biased(t):
        return t + next(offsets)

    def run(m):
        nonlocal offsets
        offsets = iter(torch.tensor([0.2, -0.2] * 32))
        return tiled_apply(ramp, biased, tile=64, overlap=24, mode=m) - ramp

    smooth, hard = run(mode), run('constant')
    assert _max_step(hard) > 0.15  # constant weights: a 0.2 jump where a tile starts/ends
    assert _max_step(smooth) < 0.25 * _max_step(hard), (_max_step(smooth), _max_step(hard))


@pytest.mark.parametrize('mode', ['core', 'gaussian', 'cosine', 'constant'])
def test_weights_reconstruct_ramp_through_identity(mode):
    ramp = torch.linspace(-1, 1, 150)[None, None, None, :] + torch.linspace(0, 0.5, 90)[None, None, :, None]
    out = tiled_apply(ramp, lambda t: t.clone(), tile=48, overlap=16, mode=mode)
    assert torch.allclose(out, ramp, atol=1e-6)


def test_cosine_window_is_flat_at_image_border_and_tapers_inside():
    w = blend_window_1d(32, 8, taper_start=False, taper_end=True, mode='cosine')
    assert torch.all(w[:24] == 1) and w[-1] < 0.05 and torch.all(w[24:].diff() < 0)


def test_core_window_ignores_the_outer_half_of_each_overlap():
    # A "model" that is exact except within 6 px of a tile's edge (zero padding's reach):
    # the core blend takes nothing from there, the gaussian blend does.
    x = torch.rand(1, 1, 20, 200)

    def edgy(t):
        out = t.clone()
        out[..., :6] += 1
        out[..., -6:] += 1
        return out
    inner = (..., slice(6, -6), slice(6, -6))  # the image's own borders are edges of any tiling
    core = tiled_apply(x, edgy, tile=64, overlap=24, mode='core')[inner]
    gaussian = tiled_apply(x, edgy, tile=64, overlap=24, mode='gaussian')[inner]
    # Floor weight 1e-3 of the edge tile against ~1 of its neighbour: a 1e-3 share of the error.
    assert (core - x[inner]).abs().max() < 2e-3
    assert (gaussian - x[inner]).abs().max() > 0.01
    starts = tile_starts(200, 64, 24)
    cores = core_bounds(starts, 64, 200)
    total = torch.zeros(200)
    for i, (s, (c0, c1)) in enumerate(zip(starts, cores)):
        total[s:s + 64] += core_window_1d(64, (c0 - s, c1 - s), 12, i > 0, i < len(starts) - 1)
    assert torch.allclose(total, torch.ones(200), atol=2.1e-3)  # neighbours' steps sum to 1


def test_largest_tile_does_not_grow_with_image():
    largest = []
    for size in (64, 128, 256):
        seen = []

        def fn(t):
            seen.append(t.numel())
            return t

        tiled_apply(torch.zeros(1, 3, size, size), fn, tile=32, overlap=8)
        largest.append(max(seen))
    assert largest[0] == largest[1] == largest[2] == 3 * 32 * 32


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='divisible'):
        tiled_apply(torch.zeros(1, 3, 30, 30), lambda t: t, tile=16, overlap=4, scale=1 / 8)
    with pytest.raises(ValueError, match='overlap'):
        tile_starts(100, 16, 16)
    with pytest.raises(RuntimeError, match='spatial size'):
        tiled_apply(torch.zeros(1, 3, 64, 64), lambda t: t[..., :-1], tile=32, overlap=8)


# ----------------------------------------- whole-image GroupNorm statistics and attention
class _ConvNormNet(torch.nn.Module):
    """Three 1x1 conv + GroupNorm + SiLU layers: pointwise but for the GroupNorm statistics."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(*[
            torch.nn.Sequential(torch.nn.Conv2d(cin, 8, 1), torch.nn.GroupNorm(4, 8),
                                torch.nn.SiLU()) for cin in (3, 8, 8)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    return 10 * math.log10(peak ** 2 / F.mse_loss(a, b).item())


def test_shared_group_norm_reproduces_the_whole_image_network():
    # Pointwise layers: a tile's activations equal the whole image's wherever the
    # statistics do, so shared statistics that count every position once (the
    # brightness ramp would expose counting overlaps twice) leave float32 rounding only.
    net = _ConvNormNet().eval()
    x = torch.rand(2, 3, 80, 112) * torch.linspace(0, 4, 112)  # brightness differs per tile
    with torch.no_grad():
        whole = net(x)
        shared = tiled_apply(x, net, tile=48, overlap=16, norms=WholeImageContext([net]))
        per_tile = tiled_apply(x, net, tile=48, overlap=16)
    # Rounding of O(1) activations through three float32 layers: a few ulp of 1, not 1e-4.
    assert torch.allclose(shared, whole, atol=1e-4, rtol=0)
    assert (per_tile - whole).abs().max() > 0.05  # what per-tile statistics did


class _ConvNormAttentionNet(_ConvNormNet):
    """The pointwise layers around diffusers' VAE attention block (GroupNorm inside it)."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers.models.attention_processor import Attention
        self.attention = Attention(8, heads=1, dim_head=8, norm_num_groups=4, bias=True,
                                   residual_connection=True, upcast_softmax=True,
                                   _from_deprecated_attn_block=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1:](self.attention(self.layers[0](x)))


def test_shared_attention_reproduces_the_whole_image_network():
    # Pointwise layers and one self-attention: with the whole image's statistics, keys and
    # values every tile computes what the whole image does (float32 rounding left). Within
    # the tile, or with keys and values over the memory limit, the attention sees the tile only.
    net = _ConvNormAttentionNet().eval()
    x = torch.rand(1, 3, 40, 56) * torch.linspace(0, 4, 56)
    with torch.no_grad():
        whole = net(x)
        context = WholeImageContext([net], attention_memory=2 ** 20)
        shared = tiled_apply(x, net, tile=24, overlap=8, norms=context)
        small = WholeImageContext([net], attention_memory=2 * 40 * 56 * 8 * 4 - 1)  # a byte short
        norms_only = tiled_apply(x, net, tile=24, overlap=8, norms=small)
    assert torch.allclose(shared, whole, atol=1e-4, rtol=0)
    assert context.attention_summary() == (2, 0, 2 * 40 * 56 * 8 * 4)  # keys and values kept
    assert small.attention_summary() == (0, 2, 0)
    assert (norms_only - whole).abs().max() > 0.01  # what tile-local attention does


class _TwoScaleAttentionNet(_ConvNormAttentionNet):
    """An attention at full resolution, then one at half resolution (4x fewer keys)."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers.models.attention_processor import Attention
        self.coarse = Attention(8, heads=1, dim_head=8, norm_num_groups=4, bias=True,
                                residual_connection=True, _from_deprecated_attn_block=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.attention(self.layers[0](x))
        coarse = self.coarse(F.avg_pool2d(fine, 2))
        return self.layers[1:](fine + F.interpolate(coarse, scale_factor=2, mode='nearest'))


def test_attention_budget_shares_the_smallest_layers_first():
    # Keys + values of the whole image: 2 x positions x 8 channels x 4 bytes per layer.
    net, x = _TwoScaleAttentionNet().eval(), torch.rand(1, 3, 40, 56)
    fine, coarse = 2 * 40 * 56 * 8 * 4, 2 * 20 * 28 * 8 * 4
    with torch.no_grad():
        whole = net(x)
        results = {}
        for budget in (fine, fine + coarse):  # the fine layer alone would fit the first
            context = WholeImageContext([net], attention_memory=budget)
            results[budget] = tiled_apply(x, net, tile=24, overlap=8, norms=context)
            results[budget, 'summary'] = context.attention_summary()
    assert results[fine, 'summary'] == (2, 2, coarse)  # the coarse layer first, then no room
    assert results[fine + coarse, 'summary'] == (4, 0, fine + coarse)
    assert torch.allclose(results[fine + coarse], whole, atol=1e-4, rtol=0)
    assert (results[fine] - whole).abs().max() > 0.01  # the fine layer attended within tiles


def test_whole_image_context_tiled_vae_close_to_whole():
    """The demo's pretrained tiny VAE (diffusers' AutoencoderKL) tiled vs whole, on a photo.

    The floors separate the behaviours, not rounding: per-tile statistics shift each
    tile's tone by tens of grey levels; tile-local attention leaves tens of levels in
    places; the whole-image context with the core blend leaves the tiles' zero padding only.
    """
    from diffusers import AutoencoderKL
    from skimage import data
    root = osp.join(osp.dirname(__file__), '..', '..', 'configs', 'tiny_base')
    vae = AutoencoderKL.from_pretrained(root, subfolder='vae').eval()
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    x = F.interpolate(photo, size=(256, 256), mode='area')

    def encode(t):
        return vae.encode(t).latent_dist.mode()

    def decode(z):
        return vae.decode(z).sample
    with torch.no_grad():
        z = encode(x)
        whole = decode(z)
        psnr = {}
        for name, norms, attention in (('image', True, 2 ** 30), ('tile attention', True, 0),
                                       ('per-tile', False, 0)):
            enc, dec = ((WholeImageContext([m], attention) for m in (vae.encoder, vae.decoder))
                        if norms else (None, None))
            mode = 'core' if norms else 'gaussian'  # TileSettings' defaults
            psnr[name] = (_psnr(decode(tiled_apply(x, encode, 128, 32, scale=1 / 8, norms=enc,
                                                   mode=mode)), whole, 2.0),
                          _psnr(tiled_apply(z, decode, 16, 4, scale=8, norms=dec, mode=mode),
                                whole, 2.0))
    # Measured (encoder, decoder): image (85.4, 57.3), tile attention (52.4, 32.2),
    # per-tile (30.4, 26.1) dB; rounding on another CPU moves them by far less than the margins.
    for stage, gain in ((0, 10), (1, 10)):  # encoder, decoder
        assert psnr['image'][stage] >= 45, psnr  # the floor, here at 128 px tiles
        assert psnr['image'][stage] >= psnr['tile attention'][stage] + gain, psnr
        assert psnr['tile attention'][stage] > psnr['per-tile'][stage] + 3, psnr


def test_shared_group_norm_batched_tiles_match_one_by_one():
    net = _ConvNormNet().eval()
    x = torch.rand(1, 3, 80, 112)
    with torch.no_grad():
        one = tiled_apply(x, net, tile=48, overlap=16, norms=WholeImageContext([net]))
        batched = tiled_apply(x, net, tile=48, overlap=16, norms=WholeImageContext([net]),
                              tile_batch=4)
    # Per-sample maths throughout; the convolution may pick another kernel for another
    # batch size, so equal up to float32 rounding (a few ulp of O(1) values).
    assert torch.allclose(one, batched, atol=1e-5, rtol=0)


def test_batched_tiles_with_shared_attention_match_one_by_one():
    net = _ConvNormAttentionNet().eval()
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        one = tiled_apply(x, net, tile=24, overlap=8, norms=WholeImageContext([net], 2 ** 20))
        batched = tiled_apply(x, net, tile=24, overlap=8, tile_batch=4,
                              norms=WholeImageContext([net], 2 ** 20))
    # Per-sample maths; another batch size may pick another kernel: float32 rounding only.
    assert torch.allclose(one, batched, atol=1e-5, rtol=0)


def test_progress_counts_every_pass_and_its_error_stops_the_work():
    net = _ConvNormNet().eval()
    x = torch.rand(1, 3, 80, 112)
    seen = []
    with torch.no_grad():
        tiled_apply(x, net, tile=48, overlap=16, norms=WholeImageContext([net]),
                    progress=lambda d, t: seen.append((d, t)))
    tiles = len(tile_starts(80, 48, 16)) * len(tile_starts(112, 48, 16))
    # After every tile forward (3 gather passes + 1), counted in whole tiles.
    assert seen == [((i + 1) * tiles // (tiles * 4), tiles) for i in range(tiles * 4)]

    calls, reports = [], []

    def cancel(done, total):
        reports.append(done)
        if len(reports) == 2:
            raise KeyboardInterrupt('cancelled')

    def counting(t):
        calls.append(1)
        return net(t)
    with torch.no_grad(), pytest.raises(KeyboardInterrupt):
        tiled_apply(x, counting, tile=48, overlap=16, norms=WholeImageContext([net]), progress=cancel)
    assert len(calls) == 2  # no tile ran after the callback raised


def test_core_bounds_partition_the_axis():
    starts = tile_starts(100, 32, 8)
    bounds = core_bounds(starts, 32, 100)
    assert bounds[0][0] == 0 and bounds[-1][1] == 100
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(s <= lo < hi <= s + 32 for s, (lo, hi) in zip(starts, bounds))


@pytest.mark.parametrize('key,value', [('tile_batch', 0), ('norm_stats', 'global'),
                                       ('attention_memory', -1)])
def test_test_cfg_errors_name_the_key(key, value):
    from icmsr.models.one_step_sr import OneStepSR
    with pytest.raises(ValueError, match=f'model.test_cfg.{key}='):
        OneStepSR._test_settings({key: value})
