"""Atomic file writes: a file appears under its final name complete, or not at all.

Every file the toolkit writes (SR images, checkpoints, LoRA exports, reports,
score caches) goes through :func:`atomic_write` or one of the helpers below.
The data is written to a hidden temporary file in the destination folder
(``.<name>.<random>.tmp<ext>``), flushed and ``fsync``-ed, given the mode a
plain ``open()`` would give it (``0o666`` minus the umask), and renamed over
the final name with :func:`os.replace`, which is atomic on POSIX and Windows
when source and destination are on the same file system (hence the same
folder). A process killed mid-write leaves at most a hidden temporary file,
which folder listers skip (their one rule: names starting with ``.`` are
hidden); an exception inside the block removes it.
"""
import contextlib
import io
import json
import os
import re
import tempfile
from typing import Any, Iterator, Optional

_MODES = ('w', 'wb', 'wt')
# '.<name>.<random>.tmp<ext of name>', as atomic_path names its temporary files.
_TEMP_NAME = re.compile(r'^\.(?P<name>.+)\.[a-z0-9_]+\.tmp(?P<ext>(?:\.[^.]*)?)$')


def _current_umask() -> int:
    """Read the process umask (there is no read-only call; set and restore it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path to write to; it replaces ``path`` when the block succeeds.

    For libraries that write by file name (``safetensors.save_file``,
    ``cv2.imwrite``, ``PIL.Image.save``): the temporary name keeps ``path``'s
    extension, so format detection by extension works.

    Args:
        path: The final file name; its folder is created.

    Yields:
        The temporary path in the same folder.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix=f'.tmp{ext}', dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, 'rb+') as f:  # the library may not have synced its writes
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the mode open() would have given.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def unfinished_target(filename: str) -> Optional[str]:
    """The final name a temporary file of :func:`atomic_path` was written for.

    Args:
        filename: A file name (no folder), e.g. a leftover of a killed process.

    Returns:
        ``'iter_4.pth'`` for ``'.iter_4.pth.k2j4x9q_.tmp.pth'``; None for other names.
    """
    match = _TEMP_NAME.match(filename)
    if match is None or os.path.splitext(match['name'])[1] != match['ext']:
        return None
    return match['name']


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb', encoding: Optional[str] = None,
                 newline: Optional[str] = None) -> Iterator[io.IOBase]:
    """Open a file for writing that only appears under ``path`` once complete.

    Args:
        path: The final file name; its folder is created.
        mode: ``'wb'`` (default), ``'w'`` or ``'wt'``.
        encoding: Text encoding (text modes; default UTF-8).
        newline: As for :func:`open` (text modes).

    Yields:
        The open file object.

    Raises:
        ValueError: For a mode other than a truncating write.
    """
    if mode not in _MODES:
        raise ValueError(f'atomic_write: mode must be one of {_MODES}, got {mode!r}')
    text = 'b' not in mode
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=(encoding or 'utf-8') if text else None,
                  newline=newline if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str, text: str, encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``path`` atomically.

    Args:
        path: Destination file.
        text: The content.
        encoding: Text encoding.
    """
    with atomic_write(path, 'w', encoding=encoding) as f:
        f.write(text)


def atomic_write_json(path: str, obj: Any, **kwargs) -> None:
    """Serialise ``obj`` as JSON into ``path`` atomically.

    Args:
        path: Destination file.
        obj: A JSON-serialisable object.
        **kwargs: Passed to :func:`json.dump` (default ``indent=2``).
    """
    kwargs.setdefault('indent', 2)
    with atomic_write(path, 'w') as f:
        json.dump(obj, f, **kwargs)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` into ``path`` atomically.

    Args:
        obj: The object to save.
        path: Destination file.
    """
    import torch
    with atomic_write(path, 'wb') as f:
        torch.save(obj, f)


def atomic_save_image(path: str, array, **save_kwargs) -> None:
    """Save an image array atomically with Pillow; the format follows ``path``'s extension.

    Args:
        path: Destination file (``.png``, ``.jpg``, ...).
        array: ``(H, W, 3)`` or ``(H, W)`` uint8 array, or a ``PIL.Image``.
        **save_kwargs: Passed to ``PIL.Image.save`` (e.g. ``quality=95``).

    Raises:
        ValueError: When the extension is not a format Pillow can write.
    """
    from PIL import Image
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f'Cannot save {path!r}: unknown image extension {ext!r}')
    with atomic_write(path, 'wb') as f:
        image.save(f, format=fmt, **save_kwargs)
