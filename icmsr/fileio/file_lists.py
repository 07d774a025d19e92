"""Listing image files: the one folder lister and the meta-file reader.

Every part of the toolkit that lists a folder of images (datasets, ``tools/infer.py``
inputs, ``tools/eval_folder.py``) calls :func:`scan_images`, so one rule decides
what counts as an image: a file (or link to one) with an extension of
:data:`~icmsr.fileio.image_io.IMAGE_EXTENSIONS` (any case), whose name and
sub-folder names do not start with ``.`` (hidden files, editor and OS droppings
such as ``._0001.png`` or ``.DS_Store``, and the temporary files of
:mod:`icmsr.utils.atomic_io`).
"""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

from .image_io import IMAGE_EXTENSIONS

MetaFileSpec = Union[str, dict]
#: Appended by the datasets to a missing-folder error.
CONFIG_HINT = "Check the dataset's data_root and folder settings in your config."


def _show(names: Sequence[str], limit: int = 10) -> str:
    """Format the first ``limit`` names of a list for an error message."""
    shown = ', '.join(repr(n) for n in list(names)[:limit])
    more = len(names) - limit
    return shown + (f', ... ({more} more)' if more > 0 else '')


def resolve(root: Optional[str], path: str) -> str:
    """Join ``path`` to ``root`` unless it is absolute or ``root`` is empty.

    Args:
        root: Base folder ('' or None for none).
        path: A relative or absolute path.

    Returns:
        The resolved path.
    """
    if not root or osp.isabs(path):
        return path
    return osp.join(root, path)


def is_hidden(name: str) -> bool:
    """The one hidden-file rule of every folder listing: the name starts with ``.``.

    Args:
        name: A file or folder name (not a path).

    Returns:
        Whether listings skip it.
    """
    return name.startswith('.')


def scan_images(folder: str, recursive: bool = True,
                extensions: Sequence[str] = IMAGE_EXTENSIONS,
                exclude: Sequence[str] = (), hint: str = '') -> List[str]:
    """List the image files under a folder, sorted, as paths relative to it.

    Args:
        folder: The folder to scan.
        recursive: Whether to descend into sub-folders.
        extensions: Accepted lower-case extensions with the dot.
        exclude: Folders whose files are never listed, even when they lie
            inside ``folder`` (e.g. a report folder inside a prediction folder).
        hint: What to check, appended to the error for a missing folder.

    Returns:
        Relative paths with ``/`` separators, sorted. Hidden files and folders
        (:func:`is_hidden`) are skipped.

    Raises:
        FileNotFoundError: The folder does not exist.
    """
    if not osp.isdir(folder):
        message = f'Image folder {folder!r} does not exist or is not a folder.'
        raise FileNotFoundError(message + (f' {hint}' if hint else ''))
    exts = tuple(e.lower() for e in extensions)
    excluded = [osp.realpath(e) + os.sep for e in exclude]

    def kept(path: str) -> bool:
        real = osp.realpath(path) + os.sep
        return not any(real.startswith(e) for e in excluded)

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames
                             if not is_hidden(d) and kept(osp.join(dirpath, d)))
        for name in filenames:
            path = osp.join(dirpath, name)
            if (not is_hidden(name) and osp.splitext(name)[1].lower() in exts
                    and osp.isfile(path) and kept(path)):
                found.append(osp.relpath(path, folder).replace(os.sep, '/'))
        if not recursive:
            break
    return sorted(found)


def read_meta_file(spec: MetaFileSpec, data_root: str = '',
                   check_exists: bool = True) -> List[Tuple[str, str]]:
    """Read a meta file that lists image paths, one per line (BasicSR style).

    The first whitespace-separated token of each line is the path; extra columns
    (such as BasicSR's ``(2040,1404,3)`` shape) are ignored, as are empty lines
    and lines starting with ``#``.

    Args:
        spec: The meta file path, or ``dict(file=..., root=...)`` where ``root`` is
            the folder the listed paths are relative to. Paths are resolved against
            ``data_root``; without ``root`` the listed paths are relative to
            ``data_root``.
        data_root: The dataset's root folder.
        check_exists: Whether to verify that every listed file exists.

    Returns:
        ``(absolute_or_root_joined_path, relative_path)`` pairs in file order.

    Raises:
        FileNotFoundError: The meta file, or files it lists, do not exist.
        ValueError: The spec is malformed or the meta file lists nothing.
    """
    if isinstance(spec, dict):
        unknown = set(spec) - {'file', 'root'}
        if 'file' not in spec or unknown:
            raise ValueError(
                f'A meta_files entry must be a path or dict(file=..., root=...), got {spec!r}')
        meta_path, root = resolve(data_root, spec['file']), resolve(data_root, spec.get('root', ''))
    else:
        meta_path, root = resolve(data_root, spec), data_root
    if not osp.isfile(meta_path):
        raise FileNotFoundError(f'Meta file {meta_path!r} does not exist.')
    items = []
    with open(meta_path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith('#'):
                rel = line.split()[0]
                items.append((resolve(root, rel), rel))
    if not items:
        raise ValueError(f'Meta file {meta_path!r} lists no images.')
    if check_exists:
        missing = [p for p, _ in items if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f'{len(missing)} of {len(items)} files listed in {meta_path!r} do not exist '
                f'(relative to {root!r}): {_show(missing)}. Fix the meta file or its root.')
    return items


def format_unmatched(names: Sequence[str], limit: int = 10) -> str:
    """Format a list of names for an error: the count and the first ``limit``.

    Args:
        names: The names.
        limit: How many to show.

    Returns:
        E.g. ``"3: 'a', 'b', 'c'"``.
    """
    return f'{len(names)}: {_show(sorted(names), limit)}'
