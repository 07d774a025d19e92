"""Checkpoints: no partial file under a checkpoint's name, and --resume survives a bad newest one."""
import builtins
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from engine_toy import toy_runner_cfg
from icmsr.engine.checkpoint_io import (DiskFullError, ResumeFallbackWarning,
                                        checkpoint_problem, resolve_resume)
from icmsr.engine.runner_utils import set_resume

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _killed_save(folder, name):
    """Save a checkpoint in a child process that SIGKILLs itself half-way through the write."""
    script = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        import icmsr.engine  # registers the atomic local backend
        import torch
        from mmengine.runner.checkpoint import save_checkpoint
        from icmsr.utils import atomic_io

        class Dying:
            def __init__(self, f):
                self.f = f
            def write(self, data):
                self.f.write(data[:len(data) // 2])
                self.f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            def __getattr__(self, name):
                return getattr(self.f, name)

        import contextlib
        orig = atomic_io.atomic_write
        @contextlib.contextmanager
        def dying_write(*a, **k):
            with orig(*a, **k) as f:
                yield Dying(f)
        import icmsr.engine.checkpoint_io as cio
        cio.atomic_write = dying_write
        save_checkpoint({{'w': torch.zeros(500_000)}}, {str(folder / name)!r})
    ''')
    return subprocess.run([sys.executable, '-c', script])


def test_checkpoint_killed_mid_write_leaves_no_partial_file(tmp_path):
    """MMEngine's save path (torch.save to bytes, then the file backend) is atomic."""
    proc = _killed_save(tmp_path, 'iter_6.pth')
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / 'iter_6.pth').exists()
    assert all(n.startswith('.iter_6.pth.') for n in os.listdir(tmp_path))


def test_next_start_removes_what_a_killed_save_left(tmp_path, capsys):
    """Issue: a SIGKILL during a save left `.iter_4.pth.<random>.tmp.pth` forever."""
    assert _killed_save(tmp_path, 'iter_4.pth').returncode == -signal.SIGKILL
    leftover = [n for n in os.listdir(tmp_path) if n.startswith('.iter_4.pth.')]
    assert len(leftover) == 1 and leftover[0].endswith('.tmp.pth')
    size_mb = (tmp_path / leftover[0]).stat().st_size / 1e6
    others = ['.notes.txt', '.photo.png.abcd1234.tmp.png', 'iter_4.pth.tmp']  # not ours to remove
    for name in others:
        (tmp_path / name).write_text('keep')
    _train(tmp_path, 2)
    remaining = set(os.listdir(tmp_path))
    assert leftover[0] not in remaining and set(others) <= remaining
    assert f'{leftover[0]} ({size_mb:.1f} MB)' in capsys.readouterr().out


def _train(work_dir, max_iters, resume=None):
    cfg = Config(dict(work_dir=str(work_dir)))
    set_resume(cfg, resume)
    kwargs = toy_runner_cfg(str(work_dir), max_iters=max_iters, ckpt_interval=2)
    kwargs['default_hooks']['checkpoint']['max_keep_ckpts'] = 5
    runner = Runner(**kwargs, resume=bool(cfg.get('resume')), load_from=cfg.get('load_from'))
    runner.train()
    return runner


def test_truncated_newest_checkpoint_falls_back_with_warning(tmp_path):
    _train(tmp_path, 4)
    newest, older = tmp_path / 'iter_4.pth', tmp_path / 'iter_2.pth'
    assert open(tmp_path / 'last_checkpoint').read().strip().endswith('iter_4.pth')
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 2])
    assert 'truncated' in checkpoint_problem(str(newest))
    with pytest.warns(ResumeFallbackWarning) as record:
        runner = _train(tmp_path, 6, resume='auto')
    text = str(record[0].message)
    assert str(newest) in text and str(older) in text and 'unreadable' in text
    assert runner.iter == 6  # resumed at 2 and trained to the end


def test_all_checkpoints_bad_is_a_clear_error(tmp_path):
    _train(tmp_path, 2)
    (tmp_path / 'iter_2.pth').write_bytes(b'PK\x03\x04 cut')
    with pytest.raises(RuntimeError, match='no intact checkpoint in'):
        set_resume(Config(dict(work_dir=str(tmp_path))), 'auto')


@pytest.mark.parametrize('content, what', [('', 'is empty'), ('/gone/iter_9.pth', 'does not exist')])
def test_empty_or_dangling_last_checkpoint_names_work_dir_and_checkpoints(tmp_path, content, what):
    torch.save({'x': 1}, tmp_path / 'iter_3.pth')
    torch.save({'x': 1}, tmp_path / 'iter_6.pth')
    (tmp_path / 'last_checkpoint').write_text(content)
    with pytest.raises(FileNotFoundError) as info:
        set_resume(Config(dict(work_dir=str(tmp_path))), 'auto')
    msg = str(info.value)
    assert what in msg and str(tmp_path) in msg and 'iter_6.pth, iter_3.pth' in msg
    assert '--resume PATH' in msg


def test_explicit_truncated_checkpoint_named(tmp_path):
    path = tmp_path / 'iter_5.pth'
    torch.save({'w': torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(RuntimeError, match='iter_5.pth is unreadable'):
        set_resume(Config(dict(work_dir=str(tmp_path))), str(path))


class _KilledWhileWritingPointer(Exception):
    """Stands for a run killed after ``last_checkpoint`` was truncated, before its bytes."""


@pytest.mark.parametrize('hook_type', ['AtomicCheckpointHook', 'CheckpointHook'])
def test_pointer_killed_mid_write_keeps_the_previous_one(tmp_path, monkeypatch, hook_type):
    """A kill inside the second pointer write must leave the first ``last_checkpoint``.

    Any file opened for writing the pointer (``last_checkpoint`` itself, or a temporary
    file of it) is truncated and then the "kill" strikes. MMEngine's own hook truncates the
    real pointer (the observed empty ``last_checkpoint``); ours replaces it atomically.
    """
    real_open = builtins.open
    pointer_writes = []

    def open_killing_second_pointer_write(file, mode='r', *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)  # 'w' truncates, as the real open does
        if os.path.basename(str(file)).lstrip('.').startswith('last_checkpoint') and 'w' in mode:
            pointer_writes.append(file)
            if len(pointer_writes) == 2:
                handle.close()
                raise _KilledWhileWritingPointer(str(file))
        return handle

    monkeypatch.setattr(builtins, 'open', open_killing_second_pointer_write)
    kwargs = toy_runner_cfg(str(tmp_path), max_iters=4, ckpt_interval=2)
    kwargs['default_hooks']['checkpoint']['type'] = hook_type
    with pytest.raises(_KilledWhileWritingPointer):
        Runner(**kwargs).train()
    monkeypatch.undo()
    pointer = (tmp_path / 'last_checkpoint').read_text()
    if hook_type == 'CheckpointHook':
        assert pointer == ''  # the failure the atomic hook exists for
        return
    assert os.path.basename(pointer_writes[1]).startswith('.last_checkpoint.')  # a temp file
    assert pointer == str(tmp_path / 'iter_2.pth')
    assert checkpoint_problem(str(tmp_path / 'iter_4.pth')) is None  # the save itself was whole
    assert not [n for n in os.listdir(tmp_path) if n.startswith('.last_checkpoint')]
    assert resolve_resume(str(tmp_path)) == str(tmp_path / 'iter_2.pth')


def test_atomic_hook_writes_the_same_pointer(tmp_path):
    """Without a kill the pointer names the newest checkpoint, as MMEngine's does."""
    _train(tmp_path, 4)
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_4.pth')
    assert not [n for n in os.listdir(tmp_path) if n.startswith('.last_checkpoint')]


def test_copied_work_dir_resumes_from_its_own_checkpoint(tmp_path):
    """Issue: a copy resumed from the original folder's checkpoint (absolute pointer)."""
    original, copy = tmp_path / 'original', tmp_path / 'copy'
    _train(original, 2)
    shutil.copytree(original, copy)
    assert (copy / 'last_checkpoint').read_text() == str(original / 'iter_2.pth')
    with pytest.warns(ResumeFallbackWarning, match='was it copied or moved') as record:
        runner = _train(copy, 4, resume='auto')
    assert str(original / 'iter_2.pth') in str(record[0].message)
    assert str(copy / 'iter_2.pth') in str(record[0].message)
    assert runner.iter == 4 and (copy / 'last_checkpoint').read_text() == str(copy / 'iter_4.pth')
    assert sorted(n for n in os.listdir(original) if n.endswith('.pth')) == ['iter_2.pth']


def test_pointer_to_a_folder_outside_the_work_dir_warns(tmp_path):
    """Checkpoints kept elsewhere (no copy in the work dir) are followed, with a warning."""
    torch.save({'x': 1}, tmp_path / 'iter_3.pth')
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(tmp_path / 'iter_3.pth'))
    with pytest.warns(ResumeFallbackWarning, match='outside this work dir'):
        assert resolve_resume(str(work_dir)) == str(tmp_path / 'iter_3.pth')


class _FullDisk:
    """A file whose ``write`` fails with ENOSPC, recording how many bytes were asked for."""

    def __init__(self, handle, asked):
        self.handle, self.asked = handle, asked

    def write(self, data):
        self.asked.append(len(data))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_disk_full_names_the_file_its_size_and_the_intact_checkpoint(tmp_path, monkeypatch):
    """Issue: a full work dir ended in a bare `OSError: [Errno 28] No space left on device`."""
    runner = _train(tmp_path, 2)
    real_open, asked = builtins.open, []

    def open_on_full_disk(file, mode='r', *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if os.path.basename(str(file)).startswith('.iter_4.pth.') and 'w' in mode:
            return _FullDisk(handle, asked)
        return handle

    monkeypatch.setattr(builtins, 'open', open_on_full_disk)
    with pytest.raises(DiskFullError) as info:
        _train(tmp_path, 4, resume='auto')
    monkeypatch.undo()
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    msg = str(info.value)
    assert len(asked) == 1 and f'needs about {asked[0] / 1e3:.1f} kB' in msg
    assert f'could not write {tmp_path / "iter_4.pth"}' in msg
    assert f'previous checkpoint {tmp_path / "iter_2.pth"} is intact' in msg
    assert sorted(n for n in os.listdir(tmp_path) if 'iter_' in n) == ['iter_2.pth']
    assert resolve_resume(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    state = torch.load(tmp_path / 'iter_2.pth', map_location='cpu')
    assert state['meta']['iter'] == 2 and runner.iter == 2


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 3 MB tmpfs (needs root with CAP_SYS_ADMIN, as on CI; skipped elsewhere)."""
    mount_point = tmp_path / 'small_disk'
    mount_point.mkdir()
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(mount_point)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here: {proc.stderr.decode().strip()}')
    yield mount_point
    subprocess.run(['umount', str(mount_point)], check=True)


def test_disk_full_on_a_real_small_filesystem(tiny_filesystem):
    from icmsr.engine.checkpoint_io import AtomicLocalBackend
    previous = tiny_filesystem / 'iter_2.pth'
    torch.save({'w': torch.arange(1000)}, previous)
    data = previous.read_bytes()
    with pytest.raises(DiskFullError) as info:
        AtomicLocalBackend().put(b'\0' * 4_000_000, tiny_filesystem / 'iter_4.pth')
    msg = str(info.value)
    assert 'needs about 4.0 MB' in msg and f'{previous} is intact' in msg
    assert os.listdir(tiny_filesystem) == ['iter_2.pth'] and previous.read_bytes() == data
