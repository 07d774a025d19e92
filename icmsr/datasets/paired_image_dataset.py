"""Paired LQ/GT test sets (StableSR layout) and LQ-only inference folders."""
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence

from icmsr.registry import DATASETS
from .base_sr_dataset import BaseSRDataset
from icmsr.fileio.file_lists import CONFIG_HINT, format_unmatched, resolve, scan_images
from icmsr.fileio.image_io import IMAGE_EXTENSIONS


def _index_by_key(folder: str, recursive: bool, extensions: Sequence[str]) -> Dict[str, str]:
    """Map each image's key (relative path without extension) to its relative path."""
    rels = scan_images(folder, recursive, extensions, hint=CONFIG_HINT)
    if not rels:
        raise ValueError(f'PairedImageDataset: folder {folder!r} contains no images with '
                         f'extensions {tuple(extensions)}.')
    index: Dict[str, str] = {}
    for rel in rels:
        key = osp.splitext(rel)[0]
        if key in index:
            raise ValueError(
                f'PairedImageDataset: {index[key]!r} and {rel!r} in {folder!r} share the '
                'name stem; pairing is by stem, keep one of them.')
        index[key] = rel
    return index


@DATASETS.register_module()
class PairedImageDataset(BaseSRDataset):
    """LQ/GT pairs matched by file name stem, or LQ images alone.

    The default layout is StableSR's test sets: ``data_root/test_LR`` and
    ``data_root/test_HR`` with equal file names. Pairs are matched by name, never
    by sorted position; any GT without its LQ (or LQ without its GT) is an error
    that lists the unmatched names. Items are sorted by key.

    Args:
        lq_dir: Folder of LQ images (relative to ``data_root`` unless absolute).
        gt_dir: Folder of GT images, or None for LQ-only inference folders
            (then ``gt_path`` is None and keys are the LQ stems).
        filename_tmpl: How an LQ stem derives from its GT stem, e.g. ``'{}x4'`` for
            ``0801.png`` <-> ``0801x4.png``. Keys are the GT stems.
        recursive: Whether sub-folders are scanned (keys then include them).
        extensions: Accepted image file extensions.
        on_bad_image: Defaults to ``'raise'``: a corrupt test image is an error
            naming the file.
        test_mode: Defaults to True (evaluation set).
        **kwargs: the other :class:`BaseSRDataset` arguments (``prompt``, ``caption_file``,
            ``pipeline``, ``serialize_data``, ``lazy_init``, ``max_refetch``, ``indices``).
    """

    def __init__(self,
                 data_root: str = '',
                 lq_dir: str = 'test_LR',
                 gt_dir: Optional[str] = 'test_HR',
                 filename_tmpl: str = '{}',
                 recursive: bool = False,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 on_bad_image: str = 'raise',
                 test_mode: bool = True,
                 **kwargs: Any) -> None:
        if '{}' not in filename_tmpl:
            raise ValueError(f"filename_tmpl must contain '{{}}', got {filename_tmpl!r}")
        self.lq_dir = lq_dir
        self.gt_dir = gt_dir
        self.filename_tmpl = filename_tmpl
        self.recursive = recursive
        self.extensions = tuple(extensions)
        super().__init__(data_root=data_root, on_bad_image=on_bad_image, test_mode=test_mode,
                         **kwargs)

    def list_items(self) -> List[dict]:
        """Match LQ and GT files by stem.

        Returns:
            Item dicts with ``key``, ``gt_path``, ``lq_path`` and ``relpath``.

        Raises:
            FileNotFoundError: A folder is missing.
            ValueError: A folder is empty or some files have no partner.
        """
        lq_root = resolve(self.data_root, self.lq_dir)
        lq_index = _index_by_key(lq_root, self.recursive, self.extensions)
        if self.gt_dir is None:
            return [dict(key=k, gt_path=None, lq_path=osp.join(lq_root, rel), relpath=rel)
                    for k, rel in sorted(lq_index.items())]
        gt_root = resolve(self.data_root, self.gt_dir)
        gt_index = _index_by_key(gt_root, self.recursive, self.extensions)
        items, gt_alone = [], []
        used_lq = set()
        for key, gt_rel in sorted(gt_index.items()):
            head, stem = osp.split(key)
            lq_key = osp.join(head, self.filename_tmpl.format(stem)).replace('\\', '/')
            if lq_key not in lq_index:
                gt_alone.append(gt_rel)
                continue
            used_lq.add(lq_key)
            items.append(dict(key=key, gt_path=osp.join(gt_root, gt_rel),
                              lq_path=osp.join(lq_root, lq_index[lq_key]), relpath=gt_rel))
        lq_alone = [rel for k, rel in lq_index.items() if k not in used_lq]
        if gt_alone or lq_alone:
            raise ValueError(
                f'PairedImageDataset: LQ and GT files do not pair up by name '
                f'(filename_tmpl={self.filename_tmpl!r}). GT without LQ in {gt_root!r} '
                f'{format_unmatched(gt_alone)}; LQ without GT in {lq_root!r} '
                f'{format_unmatched(lq_alone)}. {len(items)} pairs matched. Rename the '
                'files, fix filename_tmpl, or remove the strays.')
        return items
