"""What to super-resolve and with which prompt: input collection, prompt sources, output names."""
import glob
import json
import os
import warnings
from typing import Dict, List, Optional, Tuple

# Extensions we look for when a folder is given. Decoding is attempted for every
# listed file, and failures are reported per file, not by extension guessing.
from icmsr.datasets.image_io import IMAGE_EXTENSIONS

_GLOB_CHARS = set('*?[')


def collect_inputs(spec: str, recursive: bool = False) -> List[Tuple[str, str]]:
    """Expand a file, a folder or a glob pattern into ``(path, relative output name)`` pairs.

    Args:
        spec: An image file, a folder (its image files, sorted), or a glob
            pattern such as ``'photos/*.jpg'`` (quote it in the shell).
        recursive: For folders, also descend into sub-folders (the relative
            sub-path is kept in the output name).

    Returns:
        Sorted pairs; the second item is the name to write under the output folder.

    Raises:
        FileNotFoundError: Nothing exists at ``spec`` or nothing matches it.
    """
    spec = os.path.expanduser(spec)
    if os.path.isfile(spec):
        return [(spec, os.path.basename(spec))]
    if os.path.isdir(spec):
        pattern = os.path.join(spec, '**', '*') if recursive else os.path.join(spec, '*')
        files = [p for p in glob.glob(pattern, recursive=recursive)
                 if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS)]
        if not files:
            raise FileNotFoundError(
                f'Input folder {spec!r} holds no image files ({", ".join(IMAGE_EXTENSIONS)}).')
        return [(p, os.path.relpath(p, spec)) for p in sorted(files)]
    if _GLOB_CHARS & set(spec):
        files = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not files:
            raise FileNotFoundError(f'Glob pattern {spec!r} matches no file.')
        root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in files])
        return [(p, os.path.relpath(os.path.abspath(p), root)) for p in files]
    raise FileNotFoundError(f'Input {spec!r} is neither a file, a folder nor a glob pattern that matches.')


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
            self.table = self._read_table(captions)
        else:
            raise FileNotFoundError(f'Caption source {captions!r} is neither a folder nor a file.')

    @staticmethod
    def _read_table(path: str) -> Dict[str, str]:
        """Read a JSON or tab-separated caption table."""
        with open(path, encoding='utf-8') as f:
            text = f.read()
        if path.lower().endswith('.json'):
            try:
                table = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f'Caption file {path!r} is not valid JSON: {err}') from err
            if not isinstance(table, dict):
                raise ValueError(f'Caption file {path!r} must hold an object {{name: caption}}.')
            return {str(k): str(v) for k, v in table.items()}
        table = {}
        for no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if '\t' not in line:
                raise ValueError(f'{path}:{no}: expected "<name><TAB><caption>", got {line[:60]!r}.')
            name, caption = line.split('\t', 1)
            table[name.strip()] = caption.strip()
        return table

    def __call__(self, path: str) -> str:
        """Prompt for the image at ``path``.

        Args:
            path: The input image file.

        Returns:
            Its caption if one is found, else the fixed prompt.
        """
        name = os.path.basename(path)
        stem = os.path.splitext(name)[0]
        if self.caption_dir is not None:
            file = os.path.join(self.caption_dir, stem + '.txt')
            if os.path.isfile(file):
                with open(file, encoding='utf-8') as f:
                    return f.read().strip()
        elif self.table:
            for key in (name, stem):
                if key in self.table:
                    return self.table[key]
        else:
            return self.prompt
        self.missing.append(name)
        if len(self.missing) == 1:
            warnings.warn(f'No caption for {name!r}; using the fixed prompt {self.prompt!r} '
                          f'(further misses are counted in the summary).')
        return self.prompt
