"""Tile layout and blending: coverage, exactness, seam-free transitions, bounded tile size."""
import pytest
import torch
import torch.nn.functional as F

from icmsr.utils.tiling import blend_window_1d, tile_starts, tiled_apply


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


@pytest.mark.parametrize('mode', ['gaussian', 'cosine', 'constant'])
def test_weights_reconstruct_ramp_through_identity(mode):
    ramp = torch.linspace(-1, 1, 150)[None, None, None, :] + torch.linspace(0, 0.5, 90)[None, None, :, None]
    out = tiled_apply(ramp, lambda t: t.clone(), tile=48, overlap=16, mode=mode)
    assert torch.allclose(out, ramp, atol=1e-6)


def test_cosine_window_is_flat_at_image_border_and_tapers_inside():
    w = blend_window_1d(32, 8, taper_start=False, taper_end=True, mode='cosine')
    assert torch.all(w[:24] == 1) and w[-1] < 0.05 and torch.all(w[24:].diff() < 0)


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
