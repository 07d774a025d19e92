"""Inference pipeline on a tiny random model: tiling, fusion, memory bound, determinism, dtype."""
import copy

import numpy as np
import pytest
import torch

from icmsr.apis import TileSettings, fuse_generator_lora, super_resolve_image
from icmsr.models.one_step_sr import resize_to


def _lq(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Smooth content so the tiny VAE sees something image-like.
    base = torch.rand(1, 3, max(2, h // 4), max(2, w // 4), generator=g)
    return torch.nn.functional.interpolate(base, size=(h, w), mode='bilinear', align_corners=False)


def test_single_tile_matches_the_generators_own_forward(tiny_model):
    lq = _lq(16, 16)  # -> 64 x 64 output: one tile at any tile size >= 64
    with torch.no_grad():
        embeds = tiny_model.encode_prompts(['a photo'])
        img, _ = tiny_model.generator(resize_to(lq, (64, 64)) * 2 - 1, embeds)  # the training forward
    reference = ((img + 1) / 2).clamp(0, 1)
    for tile in (512, 64):
        out = tiny_model.super_resolve(lq, ['a photo'], tiles=TileSettings(tile, 16, tile, 16))
        assert out.shape == (1, 3, 64, 64)
        assert torch.allclose(out, reference, atol=1e-5), (out - reference).abs().max()


def test_tiled_large_image_has_no_seams(tiny_model):
    lq = _lq(24, 40, seed=1)  # -> 96 x 160 output, 64 px tiles overlapping by 32
    whole = tiny_model.super_resolve(lq, [''])
    # Per-tile statistics (the fast path): blending is what is tested here.
    tiled = tiny_model.super_resolve(lq, [''],
                                     tiles=TileSettings(64, 32, 64, 32, norm_stats='tile'))
    assert tiled.shape == whole.shape == (1, 3, 96, 160)
    # Per-tile statistics make tiles disagree, so the two outputs differ; blending must
    # still leave no column with an unusual jump.
    step_t = tiled.diff(dim=-1).abs().mean(dim=(0, 1, 2))
    step_w = whole.diff(dim=-1).abs().mean(dim=(0, 1, 2))
    assert step_t.max() < 1.5 * step_w.max(), (step_t.max(), step_w.max())
    assert (tiled - whole).abs().mean() < 0.25


def test_peak_tensor_size_does_not_grow_with_image(tiny_model):
    gen = tiny_model.generator
    largest = {}
    hooks = [m.register_forward_pre_hook(
        lambda mod, args, name=name: largest.__setitem__(name, max(largest.get(name, 0), args[0].numel())))
        for name, m in (('encoder', gen.vae.encoder), ('unet', gen.unet), ('decoder', gen.vae.decoder))]
    try:
        peaks = []
        for h, w in ((16, 16), (32, 48)):
            largest.clear()
            tiny_model.super_resolve(_lq(h, w), [''], tiles=TileSettings(64, 16, 64, 16,
                                                                          norm_stats='tile'))
            peaks.append(dict(largest))
    finally:
        for hk in hooks:
            hk.remove()
    # 16x16 -> 64x64 is one tile; 32x48 -> 128x192 is 12 tiles, yet no stage sees a larger input.
    assert peaks[0] == peaks[1], peaks
    assert peaks[1]['encoder'] == 3 * 64 * 64 and peaks[1]['unet'] == 4 * 8 * 8


def test_fused_lora_gives_the_same_output(tiny_model):
    lq = _lq(16, 16, seed=2)
    unfused = tiny_model.super_resolve(lq, ['x'])
    fused_model = copy.deepcopy(tiny_model)
    fused_gen = fused_model.generator
    counts = fuse_generator_lora(fused_gen)
    assert counts['unet'] > 0 and counts['vae'] > 0 and counts['conv_in'] == 1
    fused = fused_model.super_resolve(lq, ['x'])
    assert torch.allclose(fused, unfused, atol=1e-4), (fused - unfused).abs().max()
    # The LoRA matters: the base model alone gives something else.
    base = copy.deepcopy(tiny_model)
    for branches in (base.generator.unet_lora, base.generator.vae_lora):
        for b in branches.values():
            b.up.weight.data.zero_()
    plain = base.super_resolve(lq, ['x'])
    assert (plain - unfused).abs().max() > 1e-3
    with pytest.raises(RuntimeError, match='already fused'):
        fuse_generator_lora(fused_gen)


def test_deterministic_and_prompt_sensitive(tiny_model):
    img = (np.random.default_rng(0).random((16, 20, 3)) * 255).astype(np.uint8)
    a = super_resolve_image(tiny_model, img, prompt='a cat', seed=3)
    b = super_resolve_image(tiny_model, img, prompt='a cat', seed=3)
    c = super_resolve_image(tiny_model, img, prompt='a bridge at night', seed=3)
    assert a.shape == (64, 80, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_color_fix_pulls_output_mean_to_input(tiny_model):
    lq = _lq(16, 16, seed=4) * 0.3 + 0.6  # bright input
    raw = tiny_model.super_resolve(lq, [''])
    fixed = tiny_model.super_resolve(lq, [''], color_fix='adain')
    target = lq.mean(dim=(2, 3))
    assert (fixed.mean(dim=(2, 3)) - target).abs().max() < (raw.mean(dim=(2, 3)) - target).abs().max()
    assert (fixed.mean(dim=(2, 3)) - target).abs().max() < 0.02


def test_bfloat16_runs_and_stays_close(tiny_model):
    model16 = copy.deepcopy(tiny_model)
    model16.to(torch.bfloat16)
    lq = _lq(16, 16, seed=5)
    ref = tiny_model.super_resolve(lq, [''])
    out = model16.super_resolve(lq, [''])
    assert out.dtype == torch.float32 and (out - ref).abs().mean() < 0.05


def test_bad_settings_raise():
    with pytest.raises(ValueError, match='multiple of 8'):
        TileSettings(tile_size=500).validate()
    with pytest.raises(ValueError, match='exceed'):
        TileSettings(tile_size=64, tile_overlap=64).validate()
