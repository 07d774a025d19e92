"""Checkpoints on disk: written atomically, and a resume that survives a bad newest one.

Writing: MMEngine's ``CheckpointHook`` saves through ``runner.save_checkpoint``,
which serialises to memory and hands the bytes to the file backend of the path
(``mmengine.fileio``). :class:`AtomicLocalBackend` is MMEngine's local backend
whose ``put``/``put_text`` go through :func:`icmsr.utils.atomic_io.atomic_write`;
importing :mod:`icmsr.engine` registers it for local paths (MMEngine's
documented ``register_backend(..., force=True)``). A run killed while saving
leaves the previous checkpoints and at most a hidden temporary file, never a
partial ``iter_N.pth``. ``CheckpointHook`` writes the ``last_checkpoint`` pointer
with a plain ``open`` of ``<runner.work_dir>/last_checkpoint``;
:class:`AtomicCheckpointHook` (the configs' checkpoint hook) lets it write into a
hidden staging folder instead and moves the pointer into place atomically.

Resuming: :func:`resolve_resume` picks the file ``--resume`` starts from. The
newest checkpoint named by ``last_checkpoint`` is checked (a ``torch.save`` file
is a zip archive whose every member must pass its CRC); when it is truncated or
unreadable, the newest intact one of the work dir is used instead, with a
warning naming both.
"""
import contextlib
import os
import os.path as osp
import re
import shutil
import tempfile
import warnings
import zipfile
from typing import Any, Iterator, List, Optional, Union

from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook

from icmsr.registry import HOOKS
from icmsr.utils.atomic_io import atomic_write, atomic_write_text

_CKPT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


class AtomicLocalBackend(LocalBackend):
    """``mmengine.fileio.LocalBackend`` whose writes are atomic (temp file + ``os.replace``)."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        """Write bytes to ``filepath`` atomically (its folder is created).

        Args:
            obj: Data to write.
            filepath: Destination.
        """
        with atomic_write(os.fspath(filepath), 'wb') as f:
            f.write(obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically (its folder is created).

        Args:
            obj: Text to write.
            filepath: Destination.
            encoding: Text encoding.
        """
        with atomic_write(os.fspath(filepath), 'w', encoding=encoding) as f:
            f.write(obj)


def use_atomic_local_backend() -> None:
    """Make MMEngine's file I/O write local files through :class:`AtomicLocalBackend`."""
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')


class _StagedPointerRunner:
    """The runner as ``CheckpointHook`` sees it, with ``work_dir`` a hidden staging folder.

    ``work_dir`` is read by the hook's save methods for one thing only, the path of
    the ``last_checkpoint`` pointer (the checkpoint folder ``out_dir`` was fixed in
    ``before_train`` from the real runner). The staging folder is created in the
    real work dir (same file system, so the final rename is atomic) on first read,
    that is only when a checkpoint is saved. Everything else is the runner's own.
    """

    def __init__(self, runner: Any):
        self._runner = runner
        self._staging: Optional[str] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    @property
    def work_dir(self) -> str:
        """A fresh hidden folder inside the real work dir."""
        if self._staging is None:
            self._staging = tempfile.mkdtemp(prefix='.last_checkpoint.', dir=self._runner.work_dir)
        return self._staging

    def publish(self) -> None:
        """Move a staged pointer over ``<work_dir>/last_checkpoint`` and remove the folder."""
        if self._staging is None:
            return
        staged = osp.join(self._staging, 'last_checkpoint')
        if osp.isfile(staged):
            with open(staged, encoding='utf-8') as f:
                text = f.read()
            atomic_write_text(osp.join(self._runner.work_dir, 'last_checkpoint'), text)
        self.discard()

    def discard(self) -> None:
        """Remove the staging folder and whatever it holds."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


@contextlib.contextmanager
def _staged_pointer(runner: Any) -> Iterator[_StagedPointerRunner]:
    """Yield the staged runner view; publish its pointer if the block ends normally."""
    staged = _StagedPointerRunner(runner)
    try:
        yield staged
    except BaseException:
        staged.discard()  # a save that failed half-way must not replace the pointer
        raise
    staged.publish()


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` whose ``last_checkpoint`` pointer is replaced atomically.

    The hook writes ``<work_dir>/last_checkpoint`` in place (truncate, then write), so a
    run killed in between leaves an empty pointer and ``--resume`` has nothing to
    follow. Its three saving hook methods are called here with a view of the runner
    whose ``work_dir`` is a hidden staging folder; the pointer written there is then
    moved into place with :func:`icmsr.utils.atomic_io.atomic_write_text`. The
    checkpoint files themselves are atomic through :class:`AtomicLocalBackend`. All
    arguments are ``CheckpointHook``'s.
    """

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """``CheckpointHook.after_train_iter`` with the pointer staged."""
        with _staged_pointer(runner) as staged:
            super().after_train_iter(staged, batch_idx, data_batch, outputs)

    def after_train_epoch(self, runner) -> None:
        """``CheckpointHook.after_train_epoch`` with the pointer staged."""
        with _staged_pointer(runner) as staged:
            super().after_train_epoch(staged)

    def after_val_epoch(self, runner, metrics) -> None:
        """``CheckpointHook.after_val_epoch`` (best checkpoints) with the pointer staged."""
        with _staged_pointer(runner) as staged:
            super().after_val_epoch(staged, metrics)


class ResumeFallbackWarning(UserWarning):
    """The newest checkpoint is unreadable; an older intact one is resumed from."""


def checkpoint_problem(path: str) -> Optional[str]:
    """Tell what is wrong with a checkpoint file, without unpickling it.

    Args:
        path: A ``.pth`` written by ``torch.save`` (zip format).

    Returns:
        None when the file is an intact zip archive, else the reason.
    """
    if not osp.isfile(path):
        return 'the file does not exist'
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f'truncated or not a torch checkpoint ({type(err).__name__}: {err})'
    if bad is not None:
        return f'corrupt member {bad!r} (CRC mismatch)'
    return None


def list_checkpoints(work_dir: str) -> List[str]:
    """The ``iter_N.pth`` / ``epoch_N.pth`` files of a work dir, newest (largest N) first.

    Args:
        work_dir: The run's work dir.

    Returns:
        Paths.
    """
    if not osp.isdir(work_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(work_dir)
             for m in [_CKPT_NAME.match(name)] if m]
    return [osp.join(work_dir, name) for _, name in sorted(found, reverse=True)]


def resolve_resume(work_dir: str) -> Optional[str]:
    """Choose the checkpoint ``--resume`` (without a path) continues from.

    Args:
        work_dir: The run's work dir (``last_checkpoint`` is read there).

    Returns:
        The checkpoint path, or None when the work dir holds neither
        ``last_checkpoint`` nor checkpoints (training starts from scratch).

    Raises:
        FileNotFoundError: ``last_checkpoint`` is empty or names a missing file
            (the message names the work dir and the checkpoints found).
        RuntimeError: No checkpoint of the work dir is intact.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    found = list_checkpoints(work_dir)
    if not osp.isfile(pointer):
        if found:
            warnings.warn(f'{work_dir} has no last_checkpoint file; resuming from the newest '
                          f'checkpoint {found[0]}', ResumeFallbackWarning)
            return _newest_intact(found[0], found, work_dir)
        return None
    with open(pointer, encoding='utf-8') as f:
        newest = f.read().strip()
    shown = ', '.join(osp.basename(p) for p in found) or 'none'
    if not newest:
        raise FileNotFoundError(
            f'--resume: {pointer} is empty. Checkpoints found in {work_dir}: {shown}. '
            'Resume from one of them with `--resume PATH`.')
    if not osp.isabs(newest) and not osp.isfile(newest):
        newest = osp.join(work_dir, osp.basename(newest))
    if not osp.isfile(newest):
        raise FileNotFoundError(
            f'--resume: {pointer} names {newest!r}, which does not exist. Checkpoints found in '
            f'{work_dir}: {shown}. Resume from one of them with `--resume PATH`.')
    return _newest_intact(newest, found, work_dir)


def _newest_intact(newest: str, found: List[str], work_dir: str) -> str:
    """``newest`` if intact, else the newest intact checkpoint of ``found`` (with a warning)."""
    problem = checkpoint_problem(newest)
    if problem is None:
        return newest
    bad = [f'{newest}: {problem}']
    for candidate in found:
        if osp.realpath(candidate) == osp.realpath(newest):
            continue
        reason = checkpoint_problem(candidate)
        if reason is None:
            warnings.warn(
                f'--resume: the newest checkpoint {newest} is unreadable ({problem}); '
                f'resuming from {candidate} instead', ResumeFallbackWarning)
            return candidate
        bad.append(f'{candidate}: {reason}')
    raise RuntimeError(f'--resume: no intact checkpoint in {work_dir}:\n  ' + '\n  '.join(bad))
