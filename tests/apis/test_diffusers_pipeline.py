"""ICMSRPipeline: a diffusers pipeline whose output is the toolkit's one SR path, bit for bit."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from apis_helpers import write_png
from icmsr.apis import ICMSRPipeline, export_model, image_to_tensor
from icmsr.models import OneStepSR


@pytest.fixture(scope='module')
def export_dir(trained, pretrained_cfg, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('export'))
    export_model(trained, out, OneStepSR.inference_config(pretrained_cfg))
    return out


@pytest.fixture(scope='module')
def pipe(export_dir):
    pipe = ICMSRPipeline.from_export(export_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp('photos')
    return [str(root / 'a.png'), str(root / 'b.png')], [write_png(str(root / 'a.png'), 8, 8, seed=1),
                                                        write_png(str(root / 'b.png'), 6, 10, seed=2)]


def _reference(model, path, prompt='', **kwargs):
    torch.manual_seed(0)
    return model.super_resolve(image_to_tensor(path), [prompt], **kwargs)


def test_output_is_the_toolkits_sr_path(pipe, trained, photos):
    paths, _ = photos
    out = pipe(paths[0], prompt='a house', output_type='pt').images
    assert torch.equal(out, _reference(trained, paths[0], 'a house'))
    assert isinstance(pipe.sr_model, OneStepSR) and pipe.sr_model.unet is pipe.unet
    assert set(pipe.components) == {'unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'}


def test_pipeline_calls_the_front_door(pipe, trained, photos, monkeypatch):
    import icmsr.apis.image_sr as front
    from icmsr.apis import super_resolve_image
    runs = []
    real_run = front._run
    monkeypatch.setattr(front, '_run', lambda *a, **k: runs.append(1) or real_run(*a, **k))
    pil = pipe(photos[0], prompt='a house').images
    pt = pipe(photos[0][0], output_type='pt').images
    assert len(runs) == 3 and pt.shape == (1, 3, 32, 32)
    assert len(pil) == 2 and all(
        np.array_equal(np.asarray(im), super_resolve_image(trained, p, prompt='a house'))
        for im, p in zip(pil, photos[0]))


def test_output_types_tiles_and_lists(pipe, trained, photos, monkeypatch):
    paths, arrays = photos
    pil = pipe(paths, output_type='pil').images
    assert [im.size for im in pil] == [(32, 32), (40, 24)]  # PIL size is (W, H), x4
    ref_b = _reference(trained, paths[1])
    expected = (ref_b[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(pil[1]), expected)
    as_np = pipe(Image.fromarray(arrays[1]), output_type='np').images
    assert as_np.shape == (1, 24, 40, 3) and as_np.dtype == np.float32
    assert np.array_equal(as_np[0], ref_b[0].permute(1, 2, 0).numpy())
    # Tiles and colour fix reach super_resolve: 16 px UNet tiles on a 40 px output (per-tile
    # GroupNorm statistics keep this fast; whole-image ones are tested in test_tiling.py).
    import dataclasses
    monkeypatch.setattr(pipe.sr_model, 'tiles', dataclasses.replace(pipe.sr_model.tiles,
                                                                    norm_stats='tile'))
    tiles = dataclasses.replace(pipe.sr_model.tiles, tile_size=16, tile_overlap=8)
    calls = []
    tiled = pipe(paths[1], tile_size=16, tile_overlap=8, color_fix='adain', output_type='pt',
                 progress=lambda *a: calls.append(a)).images
    assert torch.equal(tiled, _reference(trained, paths[1], tiles=tiles, color_fix='adain'))
    denoise = [c for c in calls if c[0] == 'denoise']
    assert denoise[-1][1] == denoise[-1][2] > 1  # several UNet tiles, reported live
    # 'auto' over a model set to 16 px tiles: this machine's memory takes the 40 px output
    # whole, as one tile of each stage.
    monkeypatch.setattr(pipe.sr_model, 'tiles', dataclasses.replace(
        pipe.sr_model.tiles, tile_size=16, tile_overlap=8, vae_tile_size=16, vae_overlap=8))
    calls.clear()
    whole = pipe(paths[1], tile_size='auto', output_type='pt', progress=lambda *a: calls.append(a))
    assert calls == [('encode', 1, 1), ('denoise', 1, 1), ('decode', 1, 1)]
    assert torch.equal(whole.images, _reference(trained, paths[1]))
    with pytest.raises(ValueError, match='2 prompts for 1 images'):
        pipe(paths[0], prompt=['a', 'b'])
    with pytest.raises(ValueError, match="output_type='latent'"):
        pipe(paths[0], output_type='latent')


def test_save_and_from_pretrained_round_trip(pipe, photos, tmp_path):
    paths, _ = photos
    folder = str(tmp_path / 'pipe')
    pipe.save_pretrained(folder)
    index = json.load(open(os.path.join(folder, 'model_index.json')))
    assert index['_class_name'] == 'ICMSRPipeline' and index['unet'] == ['diffusers', 'UNet2DConditionModel']
    assert index['icmsr_config']['generator']['timestep'] == 999
    assert os.path.isfile(os.path.join(folder, 'icmsr_lora', 'icmsr_lora.json'))
    again = ICMSRPipeline.from_pretrained(folder)
    again.set_progress_bar_config(disable=True)
    for name in ('unet', 'vae', 'text_encoder'):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert torch.equal(again(paths, output_type='pt').images[0],
                       pipe(paths[0], output_type='pt').images)
    for a, b in zip(again.sr_model.generator.trainable_parameters(),
                    pipe.sr_model.generator.trainable_parameters()):
        assert torch.equal(a, b)
    # torch_dtype: the fingerprint is checked on the saved weights, then everything is cast.
    half = ICMSRPipeline.from_pretrained(folder, torch_dtype=torch.float16)
    half.set_progress_bar_config(disable=True)
    assert half.unet.dtype == torch.float16
    assert all(p.dtype == torch.float16 for p in half.sr_model.generator.trainable_parameters())
    assert torch.allclose(half(paths[0], output_type='pt').images,
                          pipe(paths[0], output_type='pt').images, atol=0.05)


def test_fused_pipeline_saves_folded_weights(export_dir, photos, tmp_path):
    paths, _ = photos
    unfused = ICMSRPipeline.from_export(export_dir)
    fused = ICMSRPipeline.from_export(export_dir, fuse=True)
    for p in (unfused, fused):
        p.set_progress_bar_config(disable=True)
    ref = unfused(paths[0], output_type='pt').images
    out = fused(paths[0], output_type='pt').images
    assert torch.allclose(out, ref, atol=1e-4) and not torch.equal(fused.unet.conv_in.weight,
                                                                    unfused.unet.conv_in.weight)
    folder = str(tmp_path / 'fused')
    fused.save_pretrained(folder)
    assert not os.path.exists(os.path.join(folder, 'icmsr_lora'))
    again = ICMSRPipeline.from_pretrained(folder)
    again.set_progress_bar_config(disable=True)
    assert torch.equal(again(paths[0], output_type='pt').images, out)


def test_from_pretrained_names_a_folder_without_lora(pipe, tmp_path):
    folder = str(tmp_path / 'pipe')
    pipe.save_pretrained(folder)
    import shutil
    shutil.rmtree(os.path.join(folder, 'icmsr_lora'))
    with pytest.raises(FileNotFoundError, match='icmsr_lora/'):
        ICMSRPipeline.from_pretrained(folder)


def test_readme_diffusers_snippet_runs(export_dir, trained, tmp_path, monkeypatch):
    import re
    from tiny_config import ROOT
    readme = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
    section = readme.split('## Use it from diffusers', 1)[1]
    snippet = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    os.makedirs(tmp_path / 'exports')
    os.symlink(export_dir, tmp_path / 'exports' / 'icmsr_multi')
    pixels = write_png(str(tmp_path / 'photo.jpg.png'), 8, 12, seed=4)
    Image.fromarray(pixels).save(tmp_path / 'photo.jpg', quality=95)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, 'README.md', 'exec'), {})  # the snippet exactly as written
    out = Image.open(tmp_path / 'photo_x4.png')
    assert out.size == (48, 32)
    from icmsr.apis import super_resolve_image
    expected = super_resolve_image(trained, str(tmp_path / 'photo.jpg'), color_fix='wavelet')
    assert np.array_equal(np.asarray(out), expected)
    assert os.path.isfile(tmp_path / 'icmsr-pipeline' / 'icmsr_lora' / 'pytorch_lora_weights.safetensors')
