"""Captions: the one reader of caption files and folders, for datasets and inference.

Three layouts are read:

* a JSON file ``{name: caption}``;
* a text file with one ``name<TAB>caption`` line per image (``#`` comments);
* a folder of ``<stem>.txt`` files, one caption per image.

Names may be a file stem (``0001``), a file name (``0001.png``) or a path
relative to the image folder (``sub/0001.png`` or ``sub/0001``);
:func:`lookup_caption` tries them in that order of precision.
"""
import json
import os.path as osp
from typing import Dict, Optional


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


def read_caption_folder_file(folder: str, relpath: str) -> Optional[str]:
    """Read the caption of an image from a folder of ``<stem>.txt`` files.

    Args:
        folder: The caption folder.
        relpath: The image path relative to its folder (``/`` separated); the
            caption is ``<folder>/<relpath without extension>.txt``, else
            ``<folder>/<stem>.txt``.

    Returns:
        The stripped caption, or None when there is no caption file.
    """
    no_ext = osp.splitext(relpath)[0]
    for candidate in dict.fromkeys((no_ext, osp.basename(no_ext))):
        path = osp.join(folder, candidate + '.txt')
        if osp.isfile(path):
            with open(path, encoding='utf-8') as f:
                return f.read().strip()
    return None
