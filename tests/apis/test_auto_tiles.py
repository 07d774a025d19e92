"""Automatic tile sizes: the largest tile whose measured working set fits the memory budget."""
import dataclasses

import pytest
import torch
import torch.nn as nn
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from icmsr.utils.tile_memory import TileCost, largest_tile, measure_cost
from icmsr.utils.tiling import TileSettings

# Per-tile statistics keep the tiled runs fast: these tests are about the chosen sizes.
AUTO = TileSettings('auto', 32, 'auto', 32, norm_stats='tile')


def _run(model, lq, tiles):
    totals = {}
    out = model.super_resolve(lq, [''], tiles=tiles,
                              progress=lambda stage, done, total: totals.__setitem__(stage, total))
    return out, totals


def test_large_budget_runs_the_whole_image_untiled(tiny_model):
    lq = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    out, totals = _run(tiny_model, lq, dataclasses.replace(AUTO, max_memory=1000.0))
    assert totals == dict(encode=1, denoise=1, decode=1)
    whole, _ = _run(tiny_model, lq, TileSettings(1024, 32, 1024, 32))
    assert torch.equal(out, whole)


def test_small_budget_tiles_with_the_chosen_sizes(tiny_model):
    lq = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    _run(tiny_model, lq, dataclasses.replace(AUTO, max_memory=1000.0))  # measures the costs
    vae, unet = tiny_model.tile_costs[('cpu', str(torch.float32))]
    # A budget that holds a 64 px tile of either stage but not a whole 128 px image of the VAE.
    budget = max(vae(64 * 64), unet(64 * 64))
    assert vae(128 * 128) > budget
    sizes = dict(vae_tile_size=largest_tile(vae, 128, 128, 32, budget),
                 tile_size=largest_tile(unet, 128, 128, 32, budget))
    assert sizes['vae_tile_size'] == 64
    out, totals = _run(tiny_model, lq, dataclasses.replace(AUTO, max_memory=budget / 2 ** 30))
    assert totals['encode'] == totals['decode'] == 9  # 3 x 3 tiles of 64 px, overlap 32
    explicit, _ = _run(tiny_model, lq, dataclasses.replace(AUTO, **sizes))
    # Auto only chooses the sizes: how close tiles come to the whole image is the tiling's
    # business (tests/apis/test_tiling.py).
    assert torch.equal(out, explicit)


def test_kept_attention_keys_and_values_share_the_budget(tiny_model):
    # Tiled with whole-image context, the kept keys/values (attention_memory) come out of the
    # budget: 192 px VAE tiles fit the budget alone, 128 px ones what is left of it.
    lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))  # 256 px output
    _run(tiny_model, lq[..., :8, :8], dataclasses.replace(AUTO, max_memory=1000.0))
    vae, _ = tiny_model.tile_costs[('cpu', str(torch.float32))]
    budget, left = vae(192 * 192), vae(128 * 128)
    assert largest_tile(vae, 256, 256, 32, budget) == 192
    seen = {}

    class Seen(Exception):
        pass

    def first(stage, done, total):
        seen[stage] = total
        raise Seen  # the tile count is all this test needs
    for stats, kept, tiles in (('tile', 0, 4), ('image', budget - left, 9)):
        settings = dataclasses.replace(AUTO, tile_size=512, norm_stats=stats,
                                       max_memory=budget / 2 ** 30,
                                       attention_memory=kept / 2 ** 30)
        with pytest.raises(Seen):
            tiny_model.super_resolve(lq, [''], tiles=settings, progress=first)
        assert seen['encode'] == tiles, stats  # 2 x 2 tiles of 192 px, 3 x 3 of 128 px


def test_measured_cost_counts_module_tensors_and_attention_scores():
    conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1))
    x = torch.rand(1, 3, 8, 8)
    cost = measure_cost(conv, lambda: conv(x), 64)
    # Largest module in+out: 3 + 16 channels of float32 per pixel, doubled; no attention.
    assert cost == TileCost(2 * (3 + 16) * 4, 0.0)
    # An attention that holds its scores (diffusers' unfused processor) counts them.
    attn = Attention(query_dim=8, heads=2, dim_head=4, processor=AttnProcessor())
    h = torch.rand(1, 16, 8)  # 16 tokens
    cost = measure_cost(attn, lambda: attn(h), 16)
    assert cost.quadratic == 2 * 16 * 16 * 4 / 16 ** 2  # heads * tokens^2 float32 scores
    assert cost(64) > cost(32) > cost(16)  # grows with the tile area
    # diffusers' default processor calls PyTorch's fused attention: no score matrix.
    fused = Attention(query_dim=8, heads=2, dim_head=4)
    assert isinstance(fused.processor, AttnProcessor2_0)
    assert measure_cost(fused, lambda: fused(h), 16).quadratic == 0.0


def test_largest_tile_prefers_the_whole_image_and_shrinks_with_the_budget():
    cost = TileCost(linear=100.0, quadratic=0.01)
    assert largest_tile(cost, 960, 704, 64, budget=1e12) == 960  # one tile: the whole image
    sizes = [largest_tile(cost, 960, 704, 64, budget=b) for b in (1e6, 1e7, 1e8, 1e9)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert all(s % 64 == 0 and s > 64 for s in sizes)
    assert largest_tile(cost, 960, 704, 64, budget=1.0) == 128  # the smallest legal tile
    assert largest_tile(cost, 960, 704, 64, budget=cost(960 * 704), copies=2) < 960


@pytest.mark.parametrize('value', [0, -1.0, 'lots', True])
def test_max_memory_is_validated_naming_the_key(value):
    from icmsr.models.one_step_sr import OneStepSR
    with pytest.raises(ValueError, match='model.test_cfg.max_memory='):
        OneStepSR._test_settings(dict(max_memory=value))


def test_auto_is_the_only_word_a_tile_size_takes():
    TileSettings('auto', 64, 'auto', 64, max_memory=2).validate()
    with pytest.raises(ValueError, match="vae_tile_size='big'.*'auto'"):
        TileSettings(vae_tile_size='big').validate()


@pytest.fixture(scope='module')
def infer_tool():
    import importlib.util
    import os.path as osp
    path = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'infer.py')
    spec = importlib.util.spec_from_file_location('infer_tool', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_infer_sizes_are_automatic_unless_given_or_set_by_the_config(infer_tool):
    from mmengine.config import Config
    base = ['--input', 'x.png', '--output', 'o']
    plain = Config(dict(model=dict(type='OneStepSR')))
    osediff = Config(dict(model=dict(test_cfg=dict(tile_size=768, vae_tile_size=1024))))

    def overrides(argv, config):
        return infer_tool.tile_overrides(infer_tool.parse_args(base + argv), config)

    assert overrides([], plain) == dict(tile_size='auto', vae_tile_size='auto')
    assert overrides([], osediff) == {}  # the config's sizes are honoured
    assert overrides([], None) == {}  # so are an export folder's
    assert overrides(['--tile-size', '256'], plain) == dict(tile_size=256, vae_tile_size='auto')
    assert overrides(['--max-memory', '1.5'], osediff) == dict(
        max_memory=1.5, tile_size='auto', vae_tile_size='auto')
    assert overrides(['--vae-tile-size', 'auto', '--max-memory', '2'], None)['tile_size'] == 'auto'


def test_config_checks_take_auto_tile_sizes_and_name_a_bad_one():
    from icmsr.engine.config_checks import check_config_values
    check_config_values(dict(model=dict(test_cfg=dict(tile_size='auto', vae_tile_size=512))))
    with pytest.raises(ValueError, match="model.test_cfg.vae_tile_size='big' must be an integer or 'auto'"):
        check_config_values(dict(model=dict(test_cfg=dict(vae_tile_size='big'))))
