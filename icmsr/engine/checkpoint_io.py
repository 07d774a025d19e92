"""Checkpoints on disk: written atomically, and a resume that survives a bad newest one.

Writing: MMEngine's ``CheckpointHook`` saves through ``runner.save_checkpoint``,
which serialises to memory and hands the bytes to the file backend of the path
(``mmengine.fileio``). :class:`AtomicLocalBackend` is MMEngine's local backend
whose ``put``/``put_text`` go through :func:`icmsr.utils.atomic_io.atomic_write`;
importing :mod:`icmsr.engine` registers it for local paths (MMEngine's
documented ``register_backend(..., force=True)``). A run killed while saving
leaves the previous checkpoints and at most a hidden temporary file, never a
partial ``iter_N.pth``; the next start removes such leftovers. A full disk
raises :class:`DiskFullError`, naming the file, the space it needed and the
checkpoint that is still intact. :class:`AtomicCheckpointHook` (the configs'
checkpoint hook) also replaces the ``last_checkpoint`` pointer atomically.

Resuming: :func:`resolve_resume` picks the file ``--resume`` starts from. The
newest checkpoint named by ``last_checkpoint`` is taken from the work dir itself
(a copied work dir resumes from its own files, with a warning when the pointer
names another folder) and checked (a ``torch.save`` file is a zip archive whose
every member must pass its CRC); when it is truncated or unreadable, the newest
intact one of the work dir is used instead, with a warning naming both.
"""
import errno
import os
import os.path as osp
import re
import shutil
import warnings
import zipfile
from typing import List, Optional, Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook

from icmsr.registry import HOOKS
from icmsr.utils.atomic_io import atomic_write, unfinished_target

_CKPT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')
POINTER = 'last_checkpoint'


class DiskFullError(OSError):
    """A file could not be written for lack of space (``errno.ENOSPC``).

    The message names the file, the space it needed, the space left and the
    newest checkpoint of its folder, which is intact (writes are atomic).
    """

    def __str__(self) -> str:
        return self.strerror


def _size(num_bytes: float) -> str:
    return f'{num_bytes / 1e6:.1f} MB' if num_bytes >= 1e5 else f'{num_bytes / 1e3:.1f} kB'


def write_atomically(path: str, data: Union[bytes, str], encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``path`` atomically; a full disk raises :class:`DiskFullError`.

    Args:
        path: Destination (its folder is created).
        data: Bytes, or text written with ``encoding``.
        encoding: Text encoding.

    Raises:
        DiskFullError: No space (or quota) left; ``path`` and its folder are as before.
    """
    text = isinstance(data, str)
    try:
        with atomic_write(path, 'w' if text else 'wb', encoding=encoding if text else None) as f:
            f.write(data)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        folder = osp.dirname(osp.abspath(path))
        needed = len(data.encode(encoding)) if text else len(data)
        previous = [p for p in list_checkpoints(folder) if osp.abspath(p) != osp.abspath(path)]
        intact = (f'The previous checkpoint {previous[0]} is intact; `--resume` continues '
                  'from it.' if previous else 'Files already there are unchanged.')
        raise DiskFullError(err.errno, (
            f'No space left on device: could not write {path} (needs about {_size(needed)}, '
            f'{_size(shutil.disk_usage(folder).free)} free there). {intact} Free some space or '
            'move the work dir, then resume.'), path) from err


class AtomicLocalBackend(LocalBackend):
    """``mmengine.fileio.LocalBackend`` whose writes are atomic (temp file + ``os.replace``)."""

    def put(self, obj: bytes, filepath: Union[str, os.PathLike]) -> None:
        """Write bytes to ``filepath`` atomically (its folder is created).

        Args:
            obj: Data to write.
            filepath: Destination.
        """
        write_atomically(os.fspath(filepath), obj)

    def put_text(self, obj: str, filepath: Union[str, os.PathLike],
                 encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically (its folder is created).

        Args:
            obj: Text to write.
            filepath: Destination.
            encoding: Text encoding.
        """
        write_atomically(os.fspath(filepath), obj, encoding)


def use_atomic_local_backend() -> None:
    """Make MMEngine's file I/O write local files through :class:`AtomicLocalBackend`."""
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')


def remove_unfinished_saves(folder: str) -> List[str]:
    """Delete the temporary files that saves killed half-way left in ``folder``.

    Only the temporary names of :func:`icmsr.utils.atomic_io.atomic_path` for a
    checkpoint (``.pth``) or the ``last_checkpoint`` pointer are touched.

    Args:
        folder: A work dir or checkpoint folder.

    Returns:
        ``'<name> (<size>)'`` of each removed file.
    """
    removed = []
    for name in sorted(os.listdir(folder)) if osp.isdir(folder) else []:
        target = unfinished_target(name)
        path = osp.join(folder, name)
        if target and (target.endswith('.pth') or target == POINTER) and osp.isfile(path):
            removed.append(f'{name} ({_size(osp.getsize(path))})')
            os.remove(path)
    return removed


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` whose ``last_checkpoint`` pointer is replaced atomically.

    MMEngine writes ``<work_dir>/last_checkpoint`` in place (truncate, then write), so a
    run killed in between leaves an empty pointer and ``--resume`` has nothing to follow
    (``tests/engine/test_checkpoint_io.py`` shows it for MMEngine's hook). The one method
    that writes it, ``_save_checkpoint_with_step`` (called for every periodic and best
    save), is therefore this class's own: the same rotation and save, then the pointer
    through :func:`write_atomically`. At the start of training the leftovers of saves
    killed half-way are removed, with a note. All arguments are ``CheckpointHook``'s.
    """

    def before_train(self, runner) -> None:
        """Set up as ``CheckpointHook`` does, then remove leftovers of killed saves."""
        super().before_train(runner)
        if not is_main_process():
            return
        for folder in sorted({runner.work_dir, self.out_dir}):
            removed = remove_unfinished_saves(folder)
            if removed:
                runner.logger.warning(
                    f'Removed {len(removed)} unfinished file(s) of a save that was interrupted '
                    f'(the run was killed while writing) from {folder}: {", ".join(removed)}')

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        """Rotate (``max_keep_ckpts``), save ``filename_tmpl.format(step)``, update the pointer.

        Args:
            runner: The Runner.
            step: Iteration or epoch number of the checkpoint.
            meta: The checkpoint's ``meta``.
        """
        keep = self.keep_ckpt_ids if self.max_keep_ckpts > 0 else None  # set when > 0
        if keep is not None and not (keep and keep[-1] == step):  # best saves repeat a step
            if len(keep) == self.max_keep_ckpts:
                oldest = self.file_backend.join_path(self.out_dir,
                                                     self.filename_tmpl.format(keep.popleft()))
                if is_main_process() and self.file_backend.isfile(oldest):
                    self.file_backend.remove(oldest)
            keep.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(keep))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            backend_args=self.backend_args, **self.args)
        if is_main_process():
            write_atomically(osp.join(runner.work_dir, POINTER), self.last_ckpt)


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
    pointer = osp.join(work_dir, POINTER)
    found = list_checkpoints(work_dir)
    if not osp.isfile(pointer):
        if found:
            warnings.warn(f'{work_dir} has no {POINTER} file; resuming from the newest '
                          f'checkpoint {found[0]}', ResumeFallbackWarning)
            return _newest_intact(found[0], found, work_dir)
        return None
    with open(pointer, encoding='utf-8') as f:
        named = f.read().strip()
    shown = ', '.join(osp.basename(p) for p in found) or 'none'
    if not named:
        raise FileNotFoundError(
            f'--resume: {pointer} is empty. Checkpoints found in {work_dir}: {shown}. '
            'Resume from one of them with `--resume PATH`.')
    # MMEngine writes an absolute path: a copied or moved work dir names the old folder.
    newest = own = osp.join(work_dir, osp.basename(named))
    elsewhere = osp.isabs(named) and osp.realpath(osp.dirname(named)) != osp.realpath(work_dir)
    if elsewhere and not osp.isfile(own):
        newest = named  # e.g. CheckpointHook(out_dir=...) keeps checkpoints in another folder
    if not osp.isfile(newest):
        raise FileNotFoundError(
            f'--resume: {pointer} names {named!r}, which does not exist. Checkpoints found in '
            f'{work_dir}: {shown}. Resume from one of them with `--resume PATH`.')
    if elsewhere:
        warnings.warn(f'--resume: {pointer} names {named}, outside this work dir (was it copied '
                      f'or moved?); resuming from {newest}', ResumeFallbackWarning)
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
