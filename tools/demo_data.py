"""Demo and test data: small deterministic sets built from the images shipped with scikit-image.

They let the demo, the tests and the benchmarks run anywhere, with no download:
``make_synthetic_paired_set`` writes a StableSR-layout test set (``test_HR`` and
``test_LR``), ``skimage_training_images`` a folder of HQ training images, and
``prepare_demo_data`` both, in the layout ``configs/icmsr_tiny.py`` reads.
Scaffolding, not part of the ``icmsr`` package: tools import it as a sibling
module, the tests through the ``tools/`` entry that ``tests/conftest.py`` adds
to ``sys.path``.

Both are deterministic: the same arguments write byte-identical PNG files with
the same installed OpenCV.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from tiny_base_photos import sample_image

from icmsr.utils.atomic_io import atomic_path

# Colour photographs first; grayscale textures (stacked to RGB) extend the pool.
COLOR_SOURCES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry',
                 'colorwheel', 'hubble_deep_field', 'cat')
GRAY_SOURCES = ('camera', 'brick', 'grass', 'gravel', 'coins', 'moon', 'clock')

# The mild degradation of the synthetic LQ images (8-bit units where relevant).
BLUR_SIGMA = 0.8
NOISE_SIGMA = 3.0
JPEG_QUALITY = 70


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to ``size`` (area filter down, bicubic up)."""
    interp = cv2.INTER_AREA if image.shape[0] >= size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def _write_png(path: str, rgb: np.ndarray) -> None:
    """Write a uint8 RGB array as PNG (atomically), raising when OpenCV cannot write it."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, np.ascontiguousarray(rgb[..., ::-1])):
            raise OSError(f'Could not write {path!r}.')


def degrade(gt: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    """Make a mildly degraded LQ image: blur, bicubic downscale, noise, JPEG.

    Args:
        gt: uint8 RGB ``(H, W, 3)``, H and W divisible by ``scale``.
        scale: Downscaling factor.
        rng: Source of the Gaussian noise.

    Returns:
        uint8 RGB ``(H // scale, W // scale, 3)``.
    """
    h, w = gt.shape[:2]
    blurred = cv2.GaussianBlur(gt, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REFLECT_101)
    small = cv2.resize(blurred, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)
    noisy = small.astype(np.float64) + rng.normal(0.0, NOISE_SIGMA, small.shape)
    noisy = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode('.jpg', noisy[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError('JPEG encoding failed.')
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def make_synthetic_paired_set(out_dir: str, num_images: int = 4, gt_size: int = 64,
                              scale: int = 4, seed: int = 0,
                              source: str = 'skimage') -> Dict[str, object]:
    """Write a small paired test set in StableSR's layout.

    Image ``i`` comes from the ``i``-th scikit-image sample (colour photos, then
    grayscale textures, cycling with smaller crops when more are asked for): a
    square crop at a seeded random position, resized to ``gt_size``. Its LQ is
    :func:`degrade` of it. Files are ``out_dir/test_HR/NNNN_name.png`` and the
    same names in ``out_dir/test_LR``.

    Args:
        out_dir: Output folder (created).
        num_images: Number of pairs.
        gt_size: Side of the square GT images; divisible by ``scale``.
        scale: Downscaling factor of the LQ images.
        seed: Seed of the crop positions and the noise.
        source: Where images come from; only ``'skimage'`` is available.

    Returns:
        ``dict(root=out_dir, gt_dir=..., lq_dir=..., names=[file names])``.
    """
    if source != 'skimage':
        raise ValueError(f"source must be 'skimage', got {source!r}")
    if num_images < 1 or scale < 1 or gt_size < scale or gt_size % scale:
        raise ValueError(f'need num_images >= 1 and gt_size ({gt_size}) a positive '
                         f'multiple of scale ({scale}).')
    pool = COLOR_SOURCES + GRAY_SOURCES
    rng = np.random.default_rng(seed)
    gt_dir, lq_dir = osp.join(out_dir, 'test_HR'), osp.join(out_dir, 'test_LR')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    names = []
    for i in range(num_images):
        name = pool[i % len(pool)]
        image = sample_image(name)
        h, w = image.shape[:2]
        side = max(gt_size, min(h, w) >> (i // len(pool)))  # repeats use smaller crops
        side = min(side, h, w)
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        gt = _resize(image[top:top + side, left:left + side], gt_size)
        lq = degrade(gt, scale, rng)
        file_name = f'{i:04d}_{name}.png'
        _write_png(osp.join(gt_dir, file_name), gt)
        _write_png(osp.join(lq_dir, file_name), lq)
        names.append(file_name)
    return dict(root=out_dir, gt_dir=gt_dir, lq_dir=lq_dir, names=names)


def skimage_training_images(out_dir: str, size: int,
                            names: Optional[Sequence[str]] = None) -> List[str]:
    """Write scikit-image sample images as square PNGs for a tiny training folder.

    Each image is centre-cropped to a square and resized to ``size``.

    Args:
        out_dir: Output folder (created).
        size: Side of the written images.
        names: scikit-image sample names; defaults to :data:`COLOR_SOURCES`.

    Returns:
        The written file paths, in order.
    """
    if size < 1:
        raise ValueError(f'size must be positive, got {size}')
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name in (COLOR_SOURCES if names is None else names):
        image = sample_image(name)
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        path = osp.join(out_dir, f'{name}.png')
        _write_png(path, _resize(image[top:top + side, left:left + side], size))
        paths.append(path)
    return paths


def prepare_demo_data(data_root: str) -> Dict[str, str]:
    """Write the tiny config's data: training photos and a synthetic paired test set.

    Args:
        data_root: The folder ``configs/icmsr_tiny.py`` reads (``tiny_root``,
            ``$ICMSR_TINY_DATA``).

    Returns:
        ``train`` and ``test`` folders: ``train/*.png`` (128 px) and
        ``test/test_{HR,LR}`` (seed 0, GT 128 px, LQ 32 px).
    """
    train_dir, test_dir = osp.join(data_root, 'train'), osp.join(data_root, 'test')
    skimage_training_images(train_dir, size=128)
    make_synthetic_paired_set(test_dir, num_images=4, gt_size=128, scale=4, seed=0)
    return dict(train=train_dir, test=test_dir)
