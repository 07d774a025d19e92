"""The one front door of inference (``super_resolve_image``): inputs, limits, cancel, callers."""
import dataclasses
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from apis_helpers import write_png
from icmsr.apis import (InferenceCancelled, InputTooLargeError, SRInferencer, TileSettings,
                        super_resolve_image)
from icmsr.fileio.image_io import MultiFrameWarning

ROOT = Path(__file__).resolve().parents[2]


def _rng_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_empty_image_is_refused_before_the_model(tiny_model):
    import torch
    with pytest.raises(ValueError, match=r'empty \(0x0 pixels\)'):
        super_resolve_image(tiny_model, np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match=r'empty \(5x0 pixels\)'):
        super_resolve_image(tiny_model, torch.zeros(3, 0, 5))


def test_max_pixels_names_size_limit_and_how_to_raise_it(tiny_model, tmp_path):
    image = _rng_image((10, 20, 3))
    with pytest.raises(InputTooLargeError) as err:
        super_resolve_image(tiny_model, image, max_pixels=199)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and '\n' not in message
    for part in ('20x10', '200 pixels', '199', '--max-pixels', 'max_pixels='):
        assert part in message, (part, message)
    assert super_resolve_image(tiny_model, image, max_pixels=200).shape == (40, 80, 3)
    # In a folder run the file fails with that line, named, and the run goes on.
    Image.fromarray(image).save(tmp_path / 'big.png')
    summary = SRInferencer(model=tiny_model, max_pixels=199)(str(tmp_path / 'big.png'),
                                                             str(tmp_path / 'out'), progress=False)
    assert summary.failed[0][0].endswith('big.png') and 'InputTooLargeError' in summary.failed[0][1]
    assert 'big.png' in summary.failed[0][1] and not summary.written


def test_a_file_over_the_limit_is_refused_before_it_is_decoded(tiny_model, tmp_path, monkeypatch):
    import icmsr.apis.image_sr as front
    Image.fromarray(_rng_image((10, 20, 3))).save(tmp_path / 'big.png')

    def no_decoding(path):
        raise AssertionError(f'{path} was decoded')

    monkeypatch.setattr(front, 'load_image', no_decoding)
    with pytest.raises(InputTooLargeError, match='20x10'):
        super_resolve_image(tiny_model, str(tmp_path / 'big.png'), max_pixels=199)


def test_gray_in_gray_out_equal_to_converting_the_rgb_result(tiny_model):
    gray = _rng_image((16, 12), seed=1)
    rgb_result = super_resolve_image(tiny_model, np.repeat(gray[..., None], 3, axis=2))
    out = super_resolve_image(tiny_model, gray)
    assert out.shape == (64, 48) and out.dtype == np.uint8
    assert np.array_equal(out, cv2.cvtColor(rgb_result, cv2.COLOR_RGB2GRAY))
    # ITU-R 601 luma in floats; cv2 rounds 14-bit fixed-point weights, hence at most 1 apart.
    luma = rgb_result.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out - np.rint(luma)).max() <= 1
    assert super_resolve_image(tiny_model, gray[..., None]).shape == (64, 48, 1)  # layout kept


def test_rgba_in_rgba_out_with_alpha_resized_on_its_own(tiny_model):
    rgba = _rng_image((12, 16, 4), seed=2)
    out = super_resolve_image(tiny_model, rgba)
    assert out.shape == (48, 64, 4)
    assert np.array_equal(out[..., :3], super_resolve_image(tiny_model, rgba[..., :3]))
    expected_alpha = cv2.resize(rgba[..., 3], (64, 48), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(out[..., 3], expected_alpha)


def test_folder_run_writes_gray_and_rgba_pngs(tiny_model, tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    Image.fromarray(_rng_image((12, 16), seed=3)).save(src / 'g.png')
    Image.fromarray(_rng_image((12, 16, 4), seed=4)).save(src / 'a.png')
    summary = SRInferencer(model=tiny_model)(str(src), str(tmp_path / 'out'), progress=False)
    assert len(summary.written) == 2 and not summary.failed
    for name, mode in (('g.png', 'L'), ('a.png', 'RGBA')):
        written = Image.open(tmp_path / 'out' / name)
        assert written.mode == mode and written.size == (64, 48)
        assert np.array_equal(np.asarray(written), super_resolve_image(tiny_model, str(src / name)))


def test_animated_gif_in_a_folder_is_warned_counted_and_run(tiny_model, tmp_path):
    src = tmp_path / 'in'
    src.mkdir()
    frames = [Image.fromarray(_rng_image((8, 8, 3), seed=s)) for s in range(3)]
    frames[0].save(src / 'anim.gif', save_all=True, append_images=frames[1:])
    write_png(str(src / 'still.png'), 8, 8)
    with pytest.warns(MultiFrameWarning, match=r'anim\.gif: 3 frames'):
        summary = SRInferencer(model=tiny_model)(str(src), str(tmp_path / 'out'), progress=False)
    assert sorted(os.listdir(tmp_path / 'out')) == ['anim.png', 'still.png']
    assert summary.multi_frame == [(str(src / 'anim.gif'), 3)]
    assert '1 animated/multi-page input(s), first frame used' in summary.format()


def test_skip_existing_redoes_an_output_that_does_not_decode(tiny_model, tmp_path):
    write_png(str(tmp_path / 'x.png'), 16, 16)
    inf = SRInferencer(model=tiny_model)
    out = tmp_path / 'o' / 'x.png'
    inf(str(tmp_path / 'x.png'), str(tmp_path / 'o'), progress=False)
    good = np.asarray(Image.open(out))
    data = out.read_bytes()
    out.write_bytes(data[:len(data) // 2])  # a truncated PNG under the final name
    with pytest.warns(UserWarning, match='does not decode'):
        again = inf(str(tmp_path / 'x.png'), str(tmp_path / 'o'), skip_existing=True, progress=False)
    assert again.redone == [str(out)] and again.written == [str(out)] and not again.skipped
    assert np.array_equal(np.asarray(Image.open(out)), good)
    assert 'did not decode and were redone' in again.format()
    kept = inf(str(tmp_path / 'x.png'), str(tmp_path / 'o'), skip_existing=True, progress=False)
    assert kept.skipped == [str(tmp_path / 'x.png')] and not kept.redone


def test_should_stop_cancels_between_tiles(tiny_model, monkeypatch):
    gen = tiny_model.generator
    calls = {'encode': 0, 'denoise': 0}
    for name in calls:
        def counted(*args, _name=name, _orig=getattr(gen, name), **kwargs):
            calls[_name] += 1
            return _orig(*args, **kwargs)
        monkeypatch.setattr(gen, name, counted)
    # Per-tile statistics: one encoder forward per tile, so tiles and calls correspond.
    tiles = TileSettings(tile_size=64, tile_overlap=16, vae_tile_size=64, vae_overlap=16,
                         norm_stats='tile')
    image = _rng_image((32, 32, 3), seed=5)  # 128 px output: 3 x 3 VAE tiles of 64 px
    seen = []
    with pytest.raises(InferenceCancelled):
        super_resolve_image(tiny_model, image, tiles=tiles, progress=lambda *a: seen.append(a),
                            should_stop=lambda: calls['encode'] >= 2)
    assert calls == {'encode': 2, 'denoise': 0}  # stopped after the 2nd of 9 encoder tiles
    assert seen == [('encode', 1, 9), ('encode', 2, 9)]
    with pytest.raises(InferenceCancelled):  # already cancelled: no tile runs at all
        super_resolve_image(tiny_model, image, tiles=tiles, should_stop=lambda: True)
    assert calls['encode'] == 2
    # Whole-image statistics run each tile once per GroupNorm pass; the stop is read after
    # every tile forward of every pass, so it still comes within one tile's forward.
    calls['encode'] = 0
    with pytest.raises(InferenceCancelled):
        super_resolve_image(tiny_model, image, tiles=dataclasses.replace(tiles, norm_stats='image'),
                            should_stop=lambda: calls['encode'] >= 2)
    assert calls == {'encode': 2, 'denoise': 0}


def test_every_caller_goes_through_the_front_door(tiny_model, tmp_path, monkeypatch):
    """SRInferencer (tools/infer.py), the pipeline and the web app call ``super_resolve_image``.

    The model's ``super_resolve`` is called from the front door module alone (the old
    copies of seed -> tensor -> super_resolve -> uint8 are gone).
    """
    callers = [ROOT / 'tools' / 'webui.py', ROOT / 'tools' / 'infer.py',
               *sorted((ROOT / 'icmsr' / 'apis').glob('*.py'))]
    direct = [p.name for p in callers if re.search(r'\.super_resolve\(', p.read_text())]
    assert direct == ['image_sr.py']
    import icmsr.apis.image_sr as front
    from tool_loading import load_tool
    runs = []
    real_run = front._run
    monkeypatch.setattr(front, '_run', lambda *a, **k: runs.append(1) or real_run(*a, **k))
    write_png(str(tmp_path / 'p.png'), 8, 8)
    ref = super_resolve_image(tiny_model, str(tmp_path / 'p.png'), seed=4, color_fix='none')
    SRInferencer(model=tiny_model, seed=4, color_fix='none')(str(tmp_path / 'p.png'), str(tmp_path / 'cli'),
                                          progress=False)
    webui = load_tool('tools/webui.py')
    from webui_stop import StopRequest
    result = webui.super_resolve_files(tiny_model, [str(tmp_path / 'p.png')], tiny_model.tiles, 'none',
                                       '', 4, str(tmp_path / 'web'), 10 ** 6, StopRequest())
    assert len(runs) == 3
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'cli' / 'p.png')), ref)
    assert np.array_equal(result['pairs'][0][1], ref) and np.array_equal(
        np.asarray(Image.open(result['files'][0])), ref)
