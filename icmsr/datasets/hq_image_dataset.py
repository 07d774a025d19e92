"""High-quality training images from folders and/or meta files (DIV2K, LSDIR, FFHQ)."""
from typing import Any, List, Sequence, Union

from icmsr.registry import DATASETS
from .base_sr_dataset import BaseSRDataset
from icmsr.fileio.file_lists import CONFIG_HINT, MetaFileSpec, read_meta_file, resolve, scan_images
from icmsr.fileio.image_io import IMAGE_EXTENSIONS


@DATASETS.register_module()
class HQImageDataset(BaseSRDataset):
    """HQ-only training set; LQ inputs are synthesised on the fly by the model.

    Items carry ``key`` (path relative to its folder, without extension),
    ``gt_path``, ``lq_path=None`` and ``prompt``. The list is deterministic:
    folders in config order, each sorted, then meta files in config order.

    Args:
        folders: One folder or a list of folders (relative to ``data_root`` unless
            absolute) scanned for images with ``extensions``.
        meta_files: Meta files listing image paths, one per line (first token of
            each line). Each entry is a path (listed paths relative to
            ``data_root``) or ``dict(file=..., root=...)`` (listed paths relative
            to ``root``).
        recursive: Whether folders are scanned recursively.
        extensions: Accepted image file extensions.
        check_exists: Whether to check at start-up that meta-file entries exist.
        **kwargs: :class:`BaseSRDataset` arguments (``data_root``, ``prompt``,
            ``caption_file``, ``on_bad_image``, ``pipeline``, ``serialize_data``,
            ``lazy_init``, ``max_refetch``, ``indices``, ``test_mode``).

    Example:
        >>> dict(type='HQImageDataset', data_root='data',
        ...      folders=['DIV2K/DIV2K_train_HR', 'LSDIR/HR/train'],
        ...      prompt='', pipeline=[...])
    """

    def __init__(self,
                 folders: Union[str, Sequence[str], None] = None,
                 meta_files: Union[MetaFileSpec, Sequence[MetaFileSpec], None] = None,
                 recursive: bool = True,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 check_exists: bool = True,
                 **kwargs: Any) -> None:
        self.folders = [folders] if isinstance(folders, str) else list(folders or [])
        self.meta_files = ([meta_files] if isinstance(meta_files, (str, dict))
                           else list(meta_files or []))
        if not self.folders and not self.meta_files:
            raise ValueError('HQImageDataset needs at least one entry in folders or meta_files.')
        self.recursive = recursive
        self.extensions = tuple(extensions)
        self.check_exists = check_exists
        super().__init__(**kwargs)

    def list_items(self) -> List[dict]:
        """List the images of every folder and meta file.

        Returns:
            Item dicts with ``key``, ``gt_path``, ``lq_path`` and ``relpath``.

        Raises:
            FileNotFoundError: A folder or meta file is missing.
            ValueError: A folder holds no images.
        """
        items = []
        for folder in self.folders:
            path = resolve(self.data_root, folder)
            rels = scan_images(path, self.recursive, self.extensions, hint=CONFIG_HINT)
            if not rels:
                raise ValueError(
                    f'HQImageDataset: folder {path!r} contains no images with extensions '
                    f'{self.extensions} (recursive={self.recursive}).')
            items += [dict(key=self._key_of(r), gt_path=resolve(path, r), lq_path=None,
                           relpath=r) for r in rels]
        for spec in self.meta_files:
            for full, rel in read_meta_file(spec, self.data_root, self.check_exists):
                items.append(dict(key=self._key_of(rel), gt_path=full, lq_path=None,
                                  relpath=rel))
        return items
