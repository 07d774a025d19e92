"""The one front door of inference: any image in, the SR image out.

``tools/infer.py``, :class:`~icmsr.apis.SRInferencer`, the diffusers pipeline and the
web app all call :func:`super_resolve_image` (or :func:`super_resolve_tensor`, its
float form), which run :meth:`icmsr.models.OneStepSR.super_resolve`, the toolkit's
one super-resolution path, on one image at a time.
"""
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image

from icmsr.fileio.image_io import load_image, pil_to_array, to_rgb
from icmsr.models.one_step_sr import OneStepSR
from icmsr.utils.tiling import TileSettings

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
Progress = Optional[Callable[[str, int, int], None]]


class InferenceCancelled(RuntimeError):
    """``should_stop()`` returned True: the image was abandoned between two tiles."""


class InputTooLargeError(ValueError):
    """The input has more pixels than the ``max_pixels`` limit allows."""


def _to_uint8_array(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1|3|4)`` uint8 or float-in-[0, 1] arrays -> the same layout in uint8."""
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f'Expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image array, '
                         f'got shape {image.shape}.')
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f'Image arrays must be uint8 or float in [0, 1], got {image.dtype}.')
        if image.size and (np.nanmin(image) < 0 or np.nanmax(image) > 1 or np.isnan(image).any()):
            raise ValueError('Float image arrays must hold values in [0, 1].')
        image = np.round(image * 255).astype(np.uint8)
    return image


def _split(image: ImageLike) -> Tuple[torch.Tensor, Optional[np.ndarray], Optional[tuple]]:
    """An image -> ``(1, 3, H, W)`` RGB in ``[0, 1]``, its alpha (or None), its gray shape (or None)."""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(os.fspath(image))
    elif isinstance(image, Image.Image):
        image = pil_to_array(image)
    if isinstance(image, torch.Tensor):
        t = image[None] if image.dim() == 3 else image
        if t.dim() != 4 or t.shape[:2] != (1, 3):
            raise ValueError(f'Expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}.')
        return t.float(), None, None
    if not isinstance(image, np.ndarray):
        raise TypeError(f'Unsupported image type {type(image).__name__}: pass a path, a PIL image, '
                        'a numpy array or a tensor.')
    image = _to_uint8_array(image)
    gray = image.shape if image.ndim == 2 or image.shape[2] == 1 else None
    alpha = image[..., 3] if gray is None and image.shape[2] == 4 else None
    rgb = to_rgb(image.reshape(image.shape[:2]) if gray else image).copy()
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0, alpha, gray


def image_to_tensor(image: ImageLike) -> torch.Tensor:
    """Any supported image -> ``(1, 3, H, W)`` float32 RGB in ``[0, 1]`` (gray spread, alpha dropped).

    Args:
        image: a file path (read by the toolkit's image reader: EXIF, 16-bit, CMYK...),
            a Pillow image, an ``(H, W[, C])`` uint8 or float array (gray, RGB or RGBA),
            or a ``(3, H, W)`` / ``(1, 3, H, W)`` float tensor in ``[0, 1]``.

    Returns:
        The tensor.
    """
    return _split(image)[0]


def to_uint8(sr: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in ``[0, 1]`` -> ``(H, W, 3)`` uint8 (rounded)."""
    return (sr[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _checked_progress(progress: Progress, should_stop: Optional[Callable[[], bool]]) -> Progress:
    """``progress`` that also raises :class:`InferenceCancelled` when ``should_stop()`` says so."""
    if should_stop is None:
        return progress

    def on_tile(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)
        if should_stop():
            raise InferenceCancelled(f'cancelled after {stage} tile {done}/{total}')

    if should_stop():
        raise InferenceCancelled('cancelled before the first tile')
    return on_tile


def _check_size(hw: Sequence[int], image: ImageLike, max_pixels: Optional[int]) -> None:
    h, w = hw
    name = f'{os.fspath(image)}: ' if isinstance(image, (str, os.PathLike)) else ''
    if h * w == 0:
        raise ValueError(f'{name}the image is empty ({w}x{h} pixels): nothing to super-resolve.')
    if max_pixels is not None and h * w > max_pixels:
        raise InputTooLargeError(
            f'{name}the image is {w}x{h} = {h * w:,} pixels, above the limit of {max_pixels:,} '
            'input pixels; raise the limit with --max-pixels (tools/infer.py, tools/webui.py) '
            'or max_pixels= in Python, or downscale the image.')


def super_resolve_tensor(model: OneStepSR, image: ImageLike, **settings: Any) -> torch.Tensor:
    """:func:`super_resolve_image` of one image as ``(1, 3, H * s, W * s)`` float32 RGB in ``[0, 1]``.

    Args:
        model: The inference model.
        image: One image (see :func:`super_resolve_image`; gray is spread, alpha dropped).
        **settings: The keyword settings of :func:`super_resolve_image`.

    Returns:
        The tensor on the model's device.
    """
    return _run(model, image, **settings)[0]


def _run(model, image, *, prompt='', tiles=None, color_fix=None, seed=0, max_pixels=None,
         progress=None, should_stop=None):
    """Read, check, seed and super-resolve one image: ``(sr tensor, alpha or None, gray shape or None)``."""
    if max_pixels is not None and isinstance(image, (str, os.PathLike)):
        # A file over the limit is refused from its header, before it is decoded (a file
        # Pillow cannot open is left to the toolkit's reader, which says why).
        try:
            with Image.open(os.fspath(image)) as header:
                size = header.size[::-1]
        except OSError:
            size = (0, 0)
        if size[0] * size[1]:
            _check_size(size, image, max_pixels)
    lq, alpha, gray = _split(image)
    _check_size(lq.shape[-2:], image, max_pixels)
    progress = _checked_progress(progress, should_stop)
    if seed is not None:
        torch.manual_seed(seed)
    sr = model.super_resolve(lq, [prompt], tiles=tiles, color_fix=color_fix, progress=progress)
    return sr, alpha, gray


def super_resolve_image(model: OneStepSR, image: Union[ImageLike, Sequence[ImageLike]], *,
                        prompt: str = '', tiles: Optional[TileSettings] = None,
                        color_fix: Optional[str] = None, seed: Optional[int] = 0,
                        max_pixels: Optional[int] = None, progress: Progress = None,
                        should_stop: Optional[Callable[[], bool]] = None
                        ) -> Union[np.ndarray, List[np.ndarray]]:
    """Super-resolve one image (or a list of them): the toolkit's one front door of inference.

    Grayscale comes back grayscale (the model runs on the gray value spread to RGB, the
    result is converted back with ``cv2.COLOR_RGB2GRAY``); RGBA comes back RGBA, the model
    running on the stored colours and the alpha upscaled on its own with bicubic
    ``cv2.resize`` (as Real-ESRGAN's inference offers).

    Args:
        model: The inference model from :func:`~icmsr.apis.init_model`.
        image: A path, Pillow image, ``(H, W[, 1|3|4])`` uint8 or float-in-[0, 1] array,
            ``(3, H, W)`` / ``(1, 3, H, W)`` float tensor, or a list of them (gives a list).
        prompt: Text prompt.
        tiles: Tiling settings (default: the model's ``test_cfg``).
        color_fix: ``'none'``, ``'adain'`` or ``'wavelet'`` (default: the model's ``test_cfg``).
        seed: Seed of torch's RNG before each image (None: leave it alone).
        max_pixels: Limit on input pixels ``h * w`` (None: no limit).
        progress: ``progress(stage, done, total)`` after every tile (see ``super_resolve``).
        should_stop: Zero-argument callable checked before the first tile and after each.

    Returns:
        uint8 ``(H * scale, W * scale[, C])``: the input's layout (gray ``(H, W)`` or
        ``(H, W, 1)``, RGB, RGBA); a tensor input gives RGB.

    Raises:
        InputTooLargeError: The input has more than ``max_pixels`` pixels.
        InferenceCancelled: ``should_stop()`` returned True.
        ValueError: An empty image or a bad setting.
    """
    kwargs = dict(prompt=prompt, tiles=tiles, color_fix=color_fix, seed=seed, max_pixels=max_pixels,
                  progress=progress, should_stop=should_stop)
    if isinstance(image, (list, tuple)):
        return [super_resolve_image(model, one, **kwargs) for one in image]
    sr, alpha, gray = _run(model, image, **kwargs)
    out = to_uint8(sr)
    if gray is not None:
        return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).reshape(*out.shape[:2], *gray[2:])
    if alpha is not None:
        size = (out.shape[1], out.shape[0])
        return np.dstack([out, cv2.resize(alpha, size, interpolation=cv2.INTER_CUBIC)])
    return out
