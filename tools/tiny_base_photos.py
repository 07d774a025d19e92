"""The photos the tiny base is pretrained on: scikit-image's bundled samples, as random crops.

Used by ``tools/pretrain_tiny_base.py`` (training crops, held-out figures) and its tests.
"""
from typing import Sequence

import numpy as np
import torch

# Photos and textures bundled with scikit-image (no download). 'cat' is held out for
# the printed figures and the shipped base's test.
TRAIN_IMAGES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry',
                'colorwheel', 'hubble_deep_field', 'retina', 'camera', 'brick', 'grass',
                'gravel', 'coins', 'moon', 'clock', 'page', 'text', 'cell')
HELD_OUT_IMAGE = 'cat'
# Shorter side of the copies crops are taken from: the demo sees 128 px photos.
SCALES = (96, 128, 192, 256)
CROP = 64


def sample_image(name: str) -> np.ndarray:
    """One scikit-image sample as uint8 RGB ``(H, W, 3)`` (gray images repeated).

    Args:
        name: a ``skimage.data`` function name.

    Returns:
        The image.
    """
    import skimage.data  # lazy: importing scikit-image takes a moment
    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f'scikit-image has no sample image {name!r}.')
    image = np.asarray(loader())
    if image.dtype != np.uint8:
        raise ValueError(f'scikit-image sample {name!r} is {image.dtype}, expected uint8.')
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def resize_short_side(image: np.ndarray, side: int) -> np.ndarray:
    """Resize so the shorter side is ``side`` (area filter down, bicubic up)."""
    import cv2
    h, w = image.shape[:2]
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interp)


class CropSampler:
    """Random flipped crops of a fixed set of images, from a seeded numpy generator.

    Args:
        names: scikit-image sample names.
        seed: seed of the crop positions and flips.
        crop: crop side in pixels.
        scales: shorter sides of the resized copies crops are drawn from.
    """

    def __init__(self, names: Sequence[str], seed: int, crop: int = CROP,
                 scales: Sequence[int] = SCALES) -> None:
        self.images = [resize_short_side(sample_image(n), s) for n in names for s in scales]
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def __call__(self, batch: int) -> torch.Tensor:
        """A batch ``(B, 3, crop, crop)`` float32 in ``[0, 1]``."""
        out = []
        for _ in range(batch):
            img = self.images[int(self.rng.integers(len(self.images)))]
            top = int(self.rng.integers(img.shape[0] - self.crop + 1))
            left = int(self.rng.integers(img.shape[1] - self.crop + 1))
            patch = img[top:top + self.crop, left:left + self.crop]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            out.append(np.ascontiguousarray(patch))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


def held_out_image(side: int = 128) -> torch.Tensor:
    """The held-out photo, centre-cropped square at ``side`` px, ``(1, 3, side, side)``."""
    img = resize_short_side(sample_image(HELD_OUT_IMAGE), side)
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    img = np.ascontiguousarray(img[top:top + side, left:left + side])
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
