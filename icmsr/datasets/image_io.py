"""Robust image reading: every file a user may point a dataset at becomes ``uint8`` RGB.

Training and test folders gathered from the web (LSDIR, FFHQ, phone photos) hold
every flavour of image file. :func:`load_image_rgb` turns each one into the single
format the rest of the toolkit expects, an ``(H, W, 3)`` ``uint8`` RGB array:

* 8-bit RGB, grayscale (``L``, ``1``), palette (``P``), CMYK and YCbCr images are
  converted to RGB by Pillow.
* 16-bit PNGs and TIFFs (grayscale, RGB, with or without alpha) are decoded at
  full depth with OpenCV (Pillow would drop the low byte of 16-bit RGB) and scaled to
  8 bit with rounding to nearest: ``v8 = floor(v16 / 257 + 1/2)``. ``65535 / 255
  = 257`` exactly, so ``0 -> 0``, ``65535 -> 255`` and a value written as
  ``v8 * 257`` reads back as ``v8``. Other grayscale files that Pillow opens in an
  ``I;16*`` or 32-bit ``I`` mode (16-bit TIFF, for instance) are taken as 16-bit
  data, clipped to ``[0, 65535]`` and scaled the same way.
* Alpha is dropped, not composited: the colour stored under transparent pixels
  is kept as it is. Super-resolution targets are the stored colours, and
  compositing on an arbitrary background would invent content.
  (:func:`load_image`, which inference uses, keeps gray as ``(H, W)`` and alpha.)
* EXIF orientation is applied, so a portrait photo from a phone is portrait.
* Animated GIF/APNG and multi-page TIFF: the first frame is read, with a
  :class:`MultiFrameWarning` naming the file and its frame count.

Anything that cannot be decoded - a missing file, a truncated or corrupt file, a
file that is not an image - raises :class:`ImageLoadError` naming the file.
"""
import io
import os
import warnings

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
#: Inference also reads GIFs (first frame, with a warning when animated); datasets do not.
INPUT_EXTENSIONS = IMAGE_EXTENSIONS + ('.gif',)

# EXIF orientation tag value -> the Pillow operation that makes the image upright.
_EXIF_ORIENTATION_TAG = 0x0112
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_TIFF_BITS_PER_SAMPLE = 258
_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


class MultiFrameWarning(UserWarning):
    """An animated or multi-page file of which only the first frame is read.

    Args:
        path: The file.
        frames: Its frame (page) count.
    """

    def __init__(self, path: str, frames: int) -> None:
        self.path, self.frames = path, frames
        super().__init__(f'{path}: {frames} frames (animated or multi-page); only the first '
                         'frame is used')


class ImageLoadError(OSError):
    """An image file could not be read or decoded.

    Args:
        path: The file that failed.
        reason: What went wrong (the decoder's message).

    Attributes:
        path (str): The file that failed.
        reason (str): What went wrong.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f'Cannot load image {self.path!r}: {reason}. Check that the file exists '
            'and opens in an image viewer; re-export or delete it (or remove it from '
            'the meta file) if it is corrupt or truncated.')

    def __reduce__(self):
        # Keep the exception picklable so it survives DataLoader worker processes.
        return (type(self), (self.path, self.reason))


def is_image_file(path: str) -> bool:
    """Tell whether a file name has one of the supported image extensions.

    Args:
        path: File name or path.

    Returns:
        True when the lower-cased extension is in :data:`IMAGE_EXTENSIONS`.
    """
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _to_uint8_from_16bit(array: np.ndarray) -> np.ndarray:
    """Scale a 16-bit array to 8 bit with rounding to nearest (no ties occur)."""
    scaled = np.floor(array.astype(np.float64) / 257.0 + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _is_16bit(image: Image.Image, data: bytes) -> bool:
    """Tell whether a PNG or TIFF stores 16 bits per sample (read from its header)."""
    if data.startswith(_PNG_SIGNATURE):
        return len(data) >= 25 and data[24] == 16
    if image.format == 'TIFF':
        bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 8)
        bits = bits if isinstance(bits, tuple) else (bits,)
        return 16 in bits
    return False


def _exif_orientation(image: Image.Image) -> int:
    """Return the EXIF orientation of an opened image (1 when absent or unreadable)."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not make a good image unreadable
        return 1


def _decode_16bit(data: bytes, path: str) -> np.ndarray:
    """Decode a 16-bit PNG/TIFF at full depth with OpenCV: uint8 gray, RGB or RGBA."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageLoadError(path, 'the 16-bit image data is corrupt or truncated')
    if array.ndim == 3:  # gray + alpha, BGR or BGRA
        array = array[..., {2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[array.shape[2]]]
    if array.dtype == np.uint16:
        array = _to_uint8_from_16bit(array)
    return np.ascontiguousarray(array.astype(np.uint8))


def _pil_to_array(image: Image.Image, path: str) -> np.ndarray:
    """Convert an opened Pillow image of any supported mode to uint8 gray, RGB or RGBA."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _to_uint8_from_16bit(np.asarray(image).astype(np.int64).clip(0, 65535))
    if image.mode == 'F':
        raise ImageLoadError(
            path, 'floating-point images are not supported; convert the file to 8- or '
            '16-bit PNG')
    mode = 'RGB'  # P, CMYK, YCbCr, LAB... convert to RGB
    if image.mode in ('RGBA', 'LA', 'PA') or 'transparency' in image.info:
        mode = 'RGBA'
    elif image.mode in ('L', '1'):
        mode = 'L'
    if image.mode != mode:
        image = image.convert(mode)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _load_strict(image: Image.Image) -> None:
    """Decode the whole image, failing on truncation even if a library allowed it.

    Some packages set Pillow's process-wide ``ImageFile.LOAD_TRUNCATED_IMAGES``
    to True, which silently fills the missing part of a truncated file with
    grey. A training image like that is worse than a skipped one, so the flag is
    held False while decoding and then restored.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_image(path: str) -> np.ndarray:
    """Read an image file as an upright uint8 array, gray kept gray and alpha kept.

    Args:
        path: Path of the image file.

    Returns:
        ``(H, W)`` for a grayscale file, ``(H, W, 4)`` RGBA for a file with alpha (or
        palette transparency), else ``(H, W, 3)`` RGB; EXIF orientation applied, 16-bit
        files scaled to 8 bit with rounding to nearest.

    Raises:
        ImageLoadError: The file is missing, unreadable, truncated, corrupt or not
            an image.
    """
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as err:
        raise ImageLoadError(path, f'cannot read the file ({err.strerror or err})') from err
    if not data:
        raise ImageLoadError(path, 'the file is empty')
    try:
        image = Image.open(io.BytesIO(data))
        # Decode fully first: truncation is detected here (reading a PNG's EXIF
        # may decode the image too, outside our strict guard).
        _load_strict(image)
        if getattr(image, 'n_frames', 1) > 1:
            warnings.warn(MultiFrameWarning(path, image.n_frames), stacklevel=2)
        if _is_16bit(image, data):
            # Pillow reads 16-bit RGB as 8 bit by dropping the low byte: decode
            # again at full depth with OpenCV (which ignores EXIF orientation).
            out = _decode_16bit(data, path)
            fix = _ORIENTATION_FIX.get(_exif_orientation(image))
            return np.ascontiguousarray(out if fix is None else Image.fromarray(out).transpose(fix))
        out = _pil_to_array(ImageOps.exif_transpose(image), path)
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow signals unknown formats, truncation and corrupt streams this way.
        raise ImageLoadError(path, f'{type(err).__name__}: {err}') from err
    if out.ndim not in (2, 3) or 0 in out.shape[:2]:
        raise ImageLoadError(path, f'decoded to an unexpected shape {out.shape}')
    return out


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An array of :func:`load_image` as RGB.

    Args:
        image: uint8 ``(H, W)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA.

    Returns:
        ``(H, W, 3)``: gray spread to three channels, alpha dropped (not composited).
    """
    return np.ascontiguousarray(np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image[..., :3])


def load_image_rgb(path: str) -> np.ndarray:
    """Read an image file as an upright ``uint8`` RGB array (:func:`load_image`, then :func:`to_rgb`).

    Args:
        path: Path of the image file.

    Returns:
        ``(H, W, 3)`` uint8, alpha dropped (not composited), gray spread to RGB.

    Raises:
        ImageLoadError: As :func:`load_image`.
    """
    return to_rgb(load_image(path))


def pil_to_array(image: Image.Image) -> np.ndarray:
    """An opened Pillow image as an upright uint8 array, converted as :func:`load_image` does.

    Args:
        image: any Pillow image.

    Returns:
        ``(H, W)`` gray, ``(H, W, 4)`` RGBA or ``(H, W, 3)`` RGB uint8.
    """
    return _pil_to_array(ImageOps.exif_transpose(image), getattr(image, 'filename', '') or '<image>')
