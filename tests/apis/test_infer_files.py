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


def test_cli_runs_from_a_config_file(tiny_cfg, photo_dir, tmp_path):
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
