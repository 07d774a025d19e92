"""Checkpoints: no partial file under a checkpoint's name, and --resume survives a bad newest one."""
import builtins
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from engine_toy import toy_runner_cfg
from icmsr.engine.checkpoint_io import (ResumeFallbackWarning, checkpoint_problem,
                                        resolve_resume)
from icmsr.engine.runner_utils import set_resume

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_checkpoint_killed_mid_write_leaves_no_partial_file(tmp_path):
    """MMEngine's save path (torch.save to bytes, then the file backend) is atomic."""
    script = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        import icmsr.engine  # registers the atomic local backend
        import torch
        from mmengine.runner.checkpoint import save_checkpoint
        from icmsr.utils import atomic_io
        real_write = None

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
        save_checkpoint({{'w': torch.zeros(500_000)}}, {str(tmp_path / 'iter_6.pth')!r})
    ''')
    proc = subprocess.run([sys.executable, '-c', script])
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / 'iter_6.pth').exists()
    assert all(n.startswith('.iter_6.pth.') for n in os.listdir(tmp_path))


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
