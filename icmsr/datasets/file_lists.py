"""Listing image files: folders, meta files and caption files shared by the datasets."""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .image_io import IMAGE_EXTENSIONS

MetaFileSpec = Union[str, dict]


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


def scan_images(folder: str, recursive: bool = True,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
    """List the image files under a folder, sorted, as paths relative to it.

    Args:
        folder: The folder to scan.
        recursive: Whether to descend into sub-folders.
        extensions: Accepted lower-case extensions with the dot.

    Returns:
        Relative paths with ``/`` separators, sorted. Hidden files are ignored.

    Raises:
        FileNotFoundError: The folder does not exist.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(
            f'Image folder {folder!r} does not exist or is not a folder. Check the '
            'dataset\'s data_root and folder settings in your config.')
    exts = tuple(e.lower() for e in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        for name in filenames:
            if not name.startswith('.') and osp.splitext(name)[1].lower() in exts:
                rel = osp.relpath(osp.join(dirpath, name), folder)
                found.append(rel.replace(os.sep, '/'))
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


def load_captions(path: str) -> Dict[str, str]:
    """Read a caption file: JSON ``{name: caption}`` or text ``name<TAB>caption`` lines.

    Names may be a file stem (``0001``), a file name (``0001.png``) or a path
    relative to the image folder (``sub/0001.png`` or ``sub/0001``).

    Args:
        path: A ``.json`` file or a text file.

    Returns:
        Mapping from name to caption.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The content does not follow either format.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'Caption file {path!r} does not exist.')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if path.lower().endswith('.json'):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f'Caption file {path!r} is not valid JSON: {err}') from err
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(
                f'Caption file {path!r} must hold one JSON object {{"name": "caption"}}.')
        return data
    captions = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith('#'):
            continue
        if '\t' not in line:
            raise ValueError(
                f'{path}:{lineno}: expected "name<TAB>caption", got {line[:80]!r}.')
        name, caption = line.split('\t', 1)
        captions[name.strip()] = caption.strip()
    return captions


def lookup_caption(captions: Dict[str, str], relpath: str) -> Optional[str]:
    """Find the caption of an image by relative path, path without extension, name or stem.

    Args:
        captions: Output of :func:`load_captions`.
        relpath: The image path relative to its folder, ``/`` separated.

    Returns:
        The caption, or None when the image has none.
    """
    no_ext = osp.splitext(relpath)[0]
    name = osp.basename(relpath)
    for candidate in (relpath, no_ext, name, osp.splitext(name)[0]):
        if candidate in captions:
            return captions[candidate]
    return None


def format_unmatched(names: Sequence[str], limit: int = 10) -> str:
    """Format a list of names for an error: the count and the first ``limit``.

    Args:
        names: The names.
        limit: How many to show.

    Returns:
        E.g. ``"3: 'a', 'b', 'c'"``.
    """
    return f'{len(names)}: {_show(sorted(names), limit)}'
