"""Folder/glob inference: same names, EXIF orientation, bad files reported, prompts, the CLI."""
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apis_helpers import write_png
from icmsr.apis import PromptSource, SRInferencer, collect_inputs, output_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def photo_dir(tmp_path):
    d = tmp_path / 'in'
    write_png(str(d / 'a.png'), 16, 16, seed=0)
    # A JPEG stored 12 high x 20 wide with EXIF orientation 6 (rotate 90): upright it is 20 x 12.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((12, 20, 3), 128, np.uint8)).save(d / 'b.jpg', exif=exif.tobytes())
    (d / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    (d / 'empty.jpg').write_bytes(b'')
    (d / 'notes.txt').write_text('not an image')
    return d


def test_folder_run_reports_bad_files_and_keeps_going(tiny_model, photo_dir, tmp_path):
    out = tmp_path / 'out'
    summary = SRInferencer(model=tiny_model)(str(photo_dir), str(out), progress=False)
    assert sorted(os.listdir(out)) == ['a.png', 'b.jpg']
    assert Image.open(out / 'a.png').size == (64, 64)
    assert Image.open(out / 'b.jpg').size == (48, 80)  # (W, H): EXIF rotation applied before SR
    failed = {os.path.basename(p): reason for p, reason in summary.failed}
    assert set(failed) == {'broken.png', 'empty.jpg'}
    assert all(reason for reason in failed.values())
    text = summary.format()
    assert '2 written, 2 failed' in text and 'broken.png' in text and 'empty.jpg' in text


def test_skip_existing_and_extension(tiny_model, tmp_path):
    src = tmp_path / 'x.png'
    write_png(str(src), 16, 16)
    inf = SRInferencer(model=tiny_model)
    first = inf(str(src), str(tmp_path / 'o'), ext='jpg', progress=False)
    assert [os.path.basename(p) for p in first.written] == ['x.jpg']
    again = inf(str(src), str(tmp_path / 'o'), ext='jpg', skip_existing=True, progress=False)
    assert again.skipped == [str(src)] and not again.written


def test_collect_inputs_file_folder_glob(tmp_path):
    for name in ('p/1.png', 'p/2.jpg', 'p/sub/3.png', 'p/readme.md'):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'x')
    assert [r for _, r in collect_inputs(str(tmp_path / 'p'))] == ['1.png', '2.jpg']
    deep = collect_inputs(str(tmp_path / 'p'), recursive=True)
    assert [r for _, r in deep] == ['1.png', '2.jpg', 'sub/3.png']
    assert [r for _, r in collect_inputs(str(tmp_path / 'p' / '*.png'))] == ['1.png']
    assert collect_inputs(str(tmp_path / 'p' / '2.jpg'))[0][1] == '2.jpg'
    with pytest.raises(FileNotFoundError, match='neither'):
        collect_inputs(str(tmp_path / 'missing'))
    with pytest.raises(FileNotFoundError, match='matches no file'):
        collect_inputs(str(tmp_path / '*.tif'))
    assert output_name('a/b.gif') == 'a/b.png' and output_name('b.jpg', 'png') == 'b.png'


def test_prompt_sources(tmp_path):
    (tmp_path / 'caps').mkdir()
    (tmp_path / 'caps' / 'cat.txt').write_text('a cat\n')
    (tmp_path / 'c.json').write_text(json.dumps({'dog.png': 'a dog', 'owl': 'an owl'}))
    (tmp_path / 'c.tsv').write_text('cat.png\ta tabby cat\n')
    assert PromptSource('fixed')('x/cat.png') == 'fixed'
    folder = PromptSource('fallback', str(tmp_path / 'caps'))
    assert folder('x/cat.png') == 'a cat'
    with pytest.warns(UserWarning, match='No caption'):
        assert folder('x/dog.png') == 'fallback'
    table = PromptSource('', str(tmp_path / 'c.json'))
    assert table('dog.png') == 'a dog' and table('y/owl.jpg') == 'an owl'
    assert PromptSource('', str(tmp_path / 'c.tsv'))('cat.png') == 'a tabby cat'
    (tmp_path / 'bad.tsv').write_text('no tab here\n')
    with pytest.raises(ValueError, match='bad.tsv:1'):
        PromptSource('', str(tmp_path / 'bad.tsv'))


def test_cli_runs_from_a_config_file(tiny_cfg, photo_dir, tmp_path, capsys):
    from mmengine.config import Config
    cfg_path = str(tmp_path / 'tiny.py')
    Config(dict(model=tiny_cfg)).dump(cfg_path)
    spec = importlib.util.spec_from_file_location('infer_tool', ROOT / 'tools' / 'infer.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = ['--config', cfg_path, '--input', str(photo_dir / '*.png'), '--output',
            str(tmp_path / 'cli'), '--color-fix', 'wavelet', '--tile-size', '64',
            '--tile-overlap', '16', '--device', 'cpu']
    assert tool.main(args) == 2  # no --weights: refused
    code = tool.main(args + ['--allow-untrained'])
    assert code == 1  # broken.png failed, a.png written
    assert os.listdir(tmp_path / 'cli') == ['a.png']
    capsys.readouterr()
    # --max-pixels: the 16 x 16 photo is refused with the size, the limit and the flag.
    code = tool.main(args + ['--allow-untrained', '--max-pixels', '255', '--no-progress'])
    out = capsys.readouterr().out
    assert code == 1 and '0 written, 2 failed' in out
    assert '16x16 = 256 pixels, above the limit of 255' in out and '--max-pixels' in out


def test_unwritable_output_fails_before_any_image_is_computed(tiny_model, photo_dir, tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    calls = []
    inf = SRInferencer(model=tiny_model)
    inf.process_one = lambda *a, **k: calls.append(a)  # would be the expensive part
    with pytest.raises(OSError, match='not writable'):
        inf(str(photo_dir), str(blocker / 'out'), progress=False)
    assert calls == []


def test_summary_names_device_dtype_tiles_and_folder(tiny_model, tmp_path):
    write_png(str(tmp_path / 'in' / 'x.png'), 40, 24)  # -> 160 x 96, padded 192 x 128: 4 x 3 tiles
    from icmsr.apis import TileSettings
    inf = SRInferencer(model=tiny_model, device='cpu', tiles=TileSettings(64, 16, 64, 16))
    seen = []
    text = inf(str(tmp_path / 'in'), str(tmp_path / 'out'), progress=False)
    line = text.format().splitlines()[1]
    assert line.startswith('device cpu, float32,') and str(tmp_path / 'out') in line
    assert text.tiles == 12 and '12 UNet tile(s) of 64 px' in line
    # The tile counter is reported live, tile by tile, through the progress callback.
    inf.process_one(str(tmp_path / 'in' / 'x.png'), lambda *a: seen.append(a))
    # With whole-image GroupNorm statistics each tile runs once per gather pass too: the
    # counter is reported after every one, in whole tiles, rising to 12 of 12.
    denoise = [a for a in seen if a[0] == 'denoise']
    assert all(total == 12 for _, _, total in denoise) and len(denoise) > 12
    assert denoise == sorted(denoise) and denoise[-1] == ('denoise', 12, 12)


def test_python_api_takes_what_people_pass(tiny_model, tmp_path):
    from icmsr.apis import default_device, image_to_tensor, super_resolve_image
    rgb = write_png(str(tmp_path / 'p.png'), 16, 12, seed=3)
    ref = super_resolve_image(tiny_model, str(tmp_path / 'p.png'))
    pil = Image.open(tmp_path / 'p.png')
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1, ), 7, np.uint8)], axis=2)
    for image in (pil, rgb, rgb.astype(np.float32) / 255, rgba, Image.fromarray(rgba)):
        # RGBA comes back RGBA: its colour part is the RGB result (the alpha is tested apart).
        assert np.array_equal(super_resolve_image(tiny_model, image)[..., :3], ref), type(image)
    gray = rgb[..., 0]
    # Grayscale becomes RGB as the file loader does (the same value in every channel).
    assert np.array_equal(image_to_tensor(gray), image_to_tensor(np.repeat(gray[..., None], 3, 2)))
    Image.fromarray(gray).save(tmp_path / 'g.png')
    assert np.array_equal(image_to_tensor(Image.open(tmp_path / 'g.png')), image_to_tensor(gray))
    outs = super_resolve_image(tiny_model, [rgb, str(tmp_path / 'p.png')])
    assert isinstance(outs, list) and all(np.array_equal(o, ref) for o in outs)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        image_to_tensor(rgb.astype(np.float32))
    with pytest.raises(TypeError, match='PIL image'):
        image_to_tensor(12)
    # init_model and SRInferencer choose the same device by default.
    assert SRInferencer(model=tiny_model).device == default_device()
