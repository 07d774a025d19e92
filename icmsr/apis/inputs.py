"""What to super-resolve and with which prompt: input collection, prompt sources, output names."""
import glob
import os
import warnings
from typing import Dict, List, Optional, Tuple

from icmsr.fileio.captions import load_captions, lookup_caption, read_caption_folder_file
# Folders are listed by the toolkit's one lister (extensions, hidden-file rule);
# decoding is attempted for every listed file and failures are reported per file.
from icmsr.fileio.file_lists import is_hidden, scan_images
from icmsr.fileio.image_io import IMAGE_EXTENSIONS, INPUT_EXTENSIONS
from icmsr.user_errors import MissingInputError

_GLOB_CHARS = set('*?[')


def collect_inputs(spec: str, recursive: bool = False) -> List[Tuple[str, str]]:
    """Expand a file, a folder or a glob pattern into ``(path, relative output name)`` pairs.

    Args:
        spec: An image file, a folder (its image files and GIFs, sorted), or a glob
            pattern such as ``'photos/*.jpg'`` (quote it in the shell).
        recursive: For folders, also descend into sub-folders (the relative
            sub-path is kept in the output name).

    Returns:
        Sorted pairs; the second item is the name to write under the output folder.

    Raises:
        MissingInputError: Nothing exists at ``spec`` or nothing matches it (a
            ``FileNotFoundError``).
    """
    spec = os.path.expanduser(spec)
    if os.path.isfile(spec):
        return [(spec, os.path.basename(spec))]
    if os.path.isdir(spec):
        rels = scan_images(spec, recursive=recursive, extensions=INPUT_EXTENSIONS)
        if not rels:
            raise MissingInputError(
                f'Input folder {spec!r} holds no image files ({", ".join(INPUT_EXTENSIONS)}).')
        return [(os.path.join(spec, r), r) for r in rels]
    if _GLOB_CHARS & set(spec):
        files = sorted(p for p in glob.glob(spec, recursive=True)
                       if os.path.isfile(p) and not is_hidden(os.path.basename(p)))
        if not files:
            raise MissingInputError(f'Glob pattern {spec!r} matches no file.')
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in files])
        return [(p, os.path.relpath(os.path.abspath(p), root)) for p in files]
    raise MissingInputError(f'Input {spec!r} is neither a file, a folder nor a glob pattern that matches.')


def output_name(rel_name: str, ext: Optional[str] = None) -> str:
    """Name of the output file: the input's name, with ``ext`` replacing the extension if given.

    Args:
        rel_name: Relative input name from :func:`collect_inputs`.
        ext: New extension without dot (``'png'``), or None to keep the input's.
            Inputs whose extension cannot be written losslessly or at all
            (e.g. ``.gif``) get ``.png``.

    Returns:
        The relative output name.
    """
    stem, old = os.path.splitext(rel_name)
    if ext:
        return f'{stem}.{ext.lstrip(".")}'
    if old.lower() not in IMAGE_EXTENSIONS:
        return f'{stem}.png'
    return rel_name


class PromptSource:
    """Prompt of each image: a fixed text, empty, or per-image captions.

    Args:
        prompt: Text used for every image (and as the fallback for images
            without a caption). ``''`` is the empty prompt.
        captions: Optional per-image captions: a folder of ``<stem>.txt`` files,
            a JSON file mapping file name or stem to caption, or a text file
            with one ``<name><TAB><caption>`` line per image.
    """

    def __init__(self, prompt: str = '', captions: Optional[str] = None) -> None:
        self.prompt = prompt
        self.caption_dir: Optional[str] = None
        self.table: Dict[str, str] = {}
        self.missing: List[str] = []
        if captions is None:
            return
        captions = os.path.expanduser(captions)
        if os.path.isdir(captions):
            self.caption_dir = captions
        elif os.path.isfile(captions):
            self.table = load_captions(captions)
        else:
            raise MissingInputError(f'Caption source {captions!r} is neither a folder nor a file.')

    def __call__(self, path: str) -> str:
        """Prompt for the image at ``path``.

        Args:
            path: The input image file.

        Returns:
            Its caption if one is found, else the fixed prompt.
        """
        name = os.path.basename(path)
        if self.caption_dir is not None:
            caption = read_caption_folder_file(self.caption_dir, name)
            if caption is not None:
                return caption
        elif self.table:
            caption = lookup_caption(self.table, name)
            if caption is not None:
                return caption
        else:
            return self.prompt
        self.missing.append(name)
        if len(self.missing) == 1:
            warnings.warn(f'No caption for {name!r}; using the fixed prompt {self.prompt!r} '
                          f'(further misses are counted in the summary).')
        return self.prompt
