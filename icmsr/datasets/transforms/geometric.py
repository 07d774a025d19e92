"""Random crop (with small-image handling) and random flips.

Randomness comes from numpy's global RNG, as in mmcv's transforms. MMEngine's
``worker_init_fn`` seeds it per DataLoader worker from the run's seed, so crops
are reproducible for a given ``randomness=dict(seed=...)`` while different
workers draw different crops. (A per-transform ``default_rng`` would be copied
into every worker with the same state and repeat the same crops.)
"""
from typing import Sequence, Tuple, Union

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from icmsr.registry import TRANSFORMS

SMALL_IMAGE_MODES = ('reflect', 'upscale', 'raise')


def _common_size(results: dict, keys: Sequence[str], owner: str) -> Tuple[int, int]:
    """Return the (H, W) shared by ``results[k]`` for every key, or raise."""
    missing = [k for k in keys if k not in results]
    if missing:
        raise KeyError(f'{owner}: results have no {missing}; load them first '
                       '(LoadImageFromFile) or change keys.')
    sizes = {k: results[k].shape[:2] for k in keys}
    if len(set(sizes.values())) != 1:
        raise ValueError(f'{owner}: images of keys {list(keys)} differ in size {sizes}; '
                         'crop/flip them with separate transforms.')
    return next(iter(sizes.values()))


@TRANSFORMS.register_module()
class RandomCropPad(BaseTransform):
    """Crop a random ``crop_size`` window; images smaller than it are padded or upscaled.

    Every key gets the same window. After this transform each image is exactly
    ``crop_size``. Sets ``results['crop_bbox'] = (top, left, height, width)`` in
    the coordinates of the (possibly padded or upscaled) image, and
    ``results['small_image_fix']`` (``None``, ``'reflect'`` or ``'upscale'``).

    Args:
        crop_size: Output size, an int or ``(height, width)``. Defaults to 512.
        keys: Images to crop (same size).
        small_image: What to do when an image is smaller than ``crop_size`` in a
            dimension: ``'reflect'`` pads it by mirror reflection (numpy's
            ``'reflect'``, edge pixel not repeated; repeated for very small
            images), centred; ``'upscale'`` resizes it (bicubic, aspect kept) so
            both sides reach the crop size; ``'raise'`` raises ValueError.
    """

    def __init__(self, crop_size: Union[int, Sequence[int]] = 512,
                 keys: Sequence[str] = ('gt',), small_image: str = 'reflect') -> None:
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f'crop_size must be a positive int or (h, w), got {crop_size!r}')
        if small_image not in SMALL_IMAGE_MODES:
            raise ValueError(
                f'small_image must be one of {SMALL_IMAGE_MODES}, got {small_image!r}')
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.keys = tuple(keys)
        self.small_image = small_image

    def _enlarge(self, image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
        """Pad or upscale one image so that both sides are at least ``crop_size``."""
        (h, w), (ch, cw) = size, self.crop_size
        if self.small_image == 'reflect':
            ph, pw = max(0, ch - h), max(0, cw - w)
            pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
            pad += ((0, 0),) * (image.ndim - 2)
            return np.pad(image, pad, mode='reflect')
        scale = max(ch / h, cw / w)
        new_w, new_h = max(cw, round(w * scale)), max(ch, round(h * scale))
        return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_CUBIC)

    def transform(self, results: dict) -> dict:
        """Crop every key.

        Args:
            results: Item dict holding the images of ``keys``.

        Returns:
            The dict with cropped images.
        """
        h, w = _common_size(results, self.keys, type(self).__name__)
        ch, cw = self.crop_size
        results['small_image_fix'] = None
        if h < ch or w < cw:
            if self.small_image == 'raise':
                raise ValueError(
                    f"RandomCropPad: image {results.get('key')!r} is {h}x{w}, smaller than "
                    f"crop_size {ch}x{cw}; set small_image='reflect' or 'upscale'.")
            for k in self.keys:
                results[k] = self._enlarge(results[k], (h, w))
            results['small_image_fix'] = self.small_image
            h, w = results[self.keys[0]].shape[:2]
        top = int(np.random.randint(0, h - ch + 1))
        left = int(np.random.randint(0, w - cw + 1))
        for k in self.keys:
            results[k] = np.ascontiguousarray(results[k][top:top + ch, left:left + cw])
        results['crop_bbox'] = (top, left, ch, cw)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(crop_size={self.crop_size}, keys={self.keys}, '
                f'small_image={self.small_image!r})')


@TRANSFORMS.register_module()
class RandomFlip(BaseTransform):
    """Flip images horizontally and/or vertically at random (same flip for every key).

    Sets ``results['flip'] = (horizontal: bool, vertical: bool)``.

    Args:
        keys: Images to flip (same size).
        prob: Probability of a horizontal flip. Defaults to 0.5.
        vertical_prob: Probability of a vertical flip. Defaults to 0 (off).
    """

    def __init__(self, keys: Sequence[str] = ('gt',), prob: float = 0.5,
                 vertical_prob: float = 0.0) -> None:
        for name, p in (('prob', prob), ('vertical_prob', vertical_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f'RandomFlip: {name} must be in [0, 1], got {p}')
        self.keys = tuple(keys)
        self.prob = prob
        self.vertical_prob = vertical_prob

    def transform(self, results: dict) -> dict:
        """Flip every key.

        Args:
            results: Item dict holding the images of ``keys``.

        Returns:
            The dict with flipped (contiguous) images.
        """
        _common_size(results, self.keys, type(self).__name__)
        # Always draw both numbers so the RNG stream does not depend on the outcome.
        horizontal = bool(np.random.rand() < self.prob)
        vertical = bool(np.random.rand() < self.vertical_prob)
        for k in self.keys:
            image = results[k]
            if horizontal:
                image = image[:, ::-1]
            if vertical:
                image = image[::-1]
            results[k] = np.ascontiguousarray(image)
        results['flip'] = (horizontal, vertical)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(keys={self.keys}, prob={self.prob}, '
                f'vertical_prob={self.vertical_prob})')
