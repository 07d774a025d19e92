"""Atomic writes: a killed or failing writer never leaves a partial file under the final name."""
import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from icmsr.utils.atomic_io import (atomic_save_image, atomic_torch_save, atomic_write,
                                   atomic_write_json, atomic_write_text)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _visible(folder):
    return sorted(n for n in os.listdir(folder) if not n.startswith('.'))


def test_killed_writer_leaves_old_file_and_no_partial(tmp_path):
    target = tmp_path / 'iter_6.pth'
    target.write_bytes(b'old complete content')
    script = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        from icmsr.utils.atomic_io import atomic_write
        with atomic_write({str(target)!r}) as f:
            f.write(b'x' * 2_000_000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    ''')
    proc = subprocess.run([sys.executable, '-c', script])
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b'old complete content'
    assert _visible(tmp_path) == ['iter_6.pth']
    # What the kill left is hidden (dot-prefixed), so folder listers skip it.
    assert all(n.startswith('.iter_6.pth.') for n in os.listdir(tmp_path) if n != 'iter_6.pth')


def test_killed_writer_of_new_file_leaves_nothing_visible(tmp_path):
    script = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        from icmsr.utils.atomic_io import atomic_write
        with atomic_write({str(tmp_path / '01.png')!r}) as f:
            f.write(b'\\x89PNG' + b'0' * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    ''')
    subprocess.run([sys.executable, '-c', script])
    assert _visible(tmp_path) == []


def test_exception_removes_temp_and_keeps_old(tmp_path):
    target = tmp_path / 'summary.json'
    target.write_text('{"old": 1}')
    with pytest.raises(RuntimeError):
        with atomic_write(str(target), 'w') as f:
            f.write('{"new": ')
            raise RuntimeError('boom')
    assert target.read_text() == '{"old": 1}'
    assert os.listdir(tmp_path) == ['summary.json']


def test_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(str(tmp_path / 'a.txt'), 'hi')
        plain = tmp_path / 'plain.txt'
        with open(plain, 'w') as f:
            f.write('hi')
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / 'a.txt').st_mode)
    assert mode == stat.S_IMODE(os.stat(plain).st_mode) == 0o640


def test_helpers_round_trip(tmp_path):
    import json
    import torch
    atomic_write_json(str(tmp_path / 'sub' / 'x.json'), {'a': [1, 2]})
    assert json.loads((tmp_path / 'sub' / 'x.json').read_text()) == {'a': [1, 2]}
    atomic_torch_save({'w': torch.arange(3)}, str(tmp_path / 'w.pth'))
    assert torch.equal(torch.load(tmp_path / 'w.pth')['w'], torch.arange(3))
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    atomic_save_image(str(tmp_path / 'i.png'), img)
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'i.png')), img)
    atomic_save_image(str(tmp_path / 'i.jpg'), img, quality=95)
    assert Image.open(tmp_path / 'i.jpg').format == 'JPEG'
    assert _visible(tmp_path) == ['i.jpg', 'i.png', 'sub', 'w.pth']
    assert sorted(os.listdir(tmp_path)) == _visible(tmp_path)  # no temp left behind


def test_rejects_append_mode(tmp_path):
    with pytest.raises(ValueError, match='mode'):
        with atomic_write(str(tmp_path / 'x'), 'a'):
            pass


def test_infer_save_image_never_leaves_a_partial_file(tmp_path, monkeypatch):
    """A writer dying inside the encoder leaves neither a truncated nor a stale-name file."""
    from icmsr.apis.inferencer import save_image
    img = np.zeros((8, 8, 3), np.uint8)
    real_save = Image.Image.save

    def dying_save(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)
        fp.truncate(20)  # half written ...
        raise KeyboardInterrupt  # ... when the run is stopped

    monkeypatch.setattr(Image.Image, 'save', dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_image(img, str(tmp_path / '01.png'))
    assert os.listdir(tmp_path) == []  # --skip-existing has nothing to keep
    monkeypatch.setattr(Image.Image, 'save', real_save)
    save_image(img, str(tmp_path / '01.png'))
    assert np.array_equal(np.asarray(Image.open(tmp_path / '01.png')), img)
