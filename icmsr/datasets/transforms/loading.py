"""Pipeline step that reads an image file with the robust loader."""
from typing import Optional

from mmcv.transforms import BaseTransform

from icmsr.registry import TRANSFORMS
from icmsr.fileio.image_io import load_image_rgb


@TRANSFORMS.register_module()
class LoadImageFromFile(BaseTransform):
    """Read ``results[f'{key}_path']`` into ``results[key]`` as ``uint8`` RGB ``(H, W, 3)``.

    Decoding follows :func:`icmsr.fileio.image_io.load_image_rgb` (16-bit,
    grayscale, palette, CMYK, alpha, EXIF orientation); an unreadable file raises
    :class:`~icmsr.fileio.image_io.ImageLoadError`, which the dataset's
    ``on_bad_image`` policy handles. Also sets ``results[f'{key}_ori_shape']``.

    Args:
        key: Which image to load, ``'gt'`` or ``'lq'``.
        allow_missing: When True, an item whose path is None (e.g. ``'gt'`` in an
            LQ-only folder) is passed through without ``results[key]``; when False
            that is an error.
    """

    def __init__(self, key: str = 'gt', allow_missing: bool = False) -> None:
        self.key = key
        self.allow_missing = allow_missing

    def transform(self, results: dict) -> Optional[dict]:
        """Load the image.

        Args:
            results: Item dict holding ``f'{key}_path'``.

        Returns:
            The same dict with ``results[key]`` and ``results[f'{key}_ori_shape']``.
        """
        path = results.get(f'{self.key}_path')
        if path is None:
            if self.allow_missing:
                return results
            raise KeyError(
                f"LoadImageFromFile(key={self.key!r}): item {results.get('key')!r} has no "
                f"'{self.key}_path'. For LQ-only data load only key='lq', or set "
                'allow_missing=True.')
        image = load_image_rgb(path)
        results[self.key] = image
        results[f'{self.key}_ori_shape'] = image.shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(key={self.key!r}, allow_missing={self.allow_missing})'
