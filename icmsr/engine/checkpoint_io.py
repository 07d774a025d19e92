"""Checkpoints on disk: written atomically, and a resume that survives a bad newest one.

Writing: MMEngine's ``CheckpointHook`` saves through ``runner.save_checkpoint``,
which serialises to memory and hands the bytes to the file backend of the path
(``mmengine.fileio``). :class:`AtomicLocalBackend` is MMEngine's local backend
whose ``put``/``put_text`` go through :func:`icmsr.utils.atomic_io.atomic_write`;
importing :mod:`icmsr.engine` registers it for local paths (MMEngine's
documented ``register_backend(..., force=True)``). A run killed while saving
leaves the previous checkpoints and at most a hidden temporary file, never a
partial ``iter_N.pth``. (``CheckpointHook`` writes the few bytes of
``last_checkpoint`` with a plain ``open``; :func:`resolve_resume` treats an
empty or dangling ``last_checkpoint`` as the clear error it is.)

Resuming: :func:`resolve_resume` picks the file ``--resume`` starts from. The
newest checkpoint named by ``last_checkpoint`` is checked (a ``torch.save`` file
is a zip archive whose every member must pass its CRC); when it is truncated or
unreadable, the newest intact one of the work dir is used instead, with a
warning naming both.
"""
import os
import os.path as osp
import re
import warnings
import zipfile
from typing import List, Optional, Union

from mmengine.fileio import LocalBackend, register_backend

from icmsr.utils.atomic_io import atomic_write

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
