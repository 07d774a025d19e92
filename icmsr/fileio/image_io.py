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
* EXIF orientation is applied, so a portrait photo from a phone is portrait.

Anything that cannot be decoded - a missing file, a truncated or corrupt file, a
file that is not an image - raises :class:`ImageLoadError` naming the file.
"""
import io
import os

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')

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
    """Decode a 16-bit PNG/TIFF at full depth with OpenCV and return uint8 RGB."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageLoadError(path, 'the 16-bit image data is corrupt or truncated')
    if array.ndim == 2:
        rgb = np.repeat(array[..., None], 3, axis=2)
    elif array.shape[2] == 2:  # gray + alpha
        rgb = np.repeat(array[..., :1], 3, axis=2)
    else:  # BGR or BGRA
        rgb = array[..., 2::-1]
    if rgb.dtype == np.uint16:
        rgb = _to_uint8_from_16bit(rgb)
    return np.ascontiguousarray(rgb.astype(np.uint8))


def _pil_to_rgb_array(image: Image.Image, path: str) -> np.ndarray:
    """Convert an opened Pillow image of any supported mode to uint8 RGB."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = _to_uint8_from_16bit(np.asarray(image).astype(np.int64).clip(0, 65535))
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if image.mode == 'F':
        raise ImageLoadError(
            path, 'floating-point images are not supported; convert the file to 8- or '
            '16-bit PNG')
    if image.mode != 'RGB':
        # RGBA/LA/PA drop alpha here; P, L, 1, CMYK, YCbCr, LAB convert to RGB.
        image = image.convert('RGB')
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


def load_image_rgb(path: str) -> np.ndarray:
    """Read an image file as an upright ``uint8`` RGB array.

    Args:
        path: Path of the image file.

    Returns:
        ``np.ndarray`` of shape ``(H, W, 3)`` and dtype ``uint8``, RGB order, with
        EXIF orientation applied and alpha dropped; 16-bit files scaled to 8 bit
        with rounding to nearest.

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
        orientation = _exif_orientation(image)
        if _is_16bit(image, data):
            # Pillow reads 16-bit RGB as 8 bit by dropping the low byte: decode
            # again at full depth with OpenCV (which ignores EXIF orientation).
            rgb = _decode_16bit(data, path)
            fix = _ORIENTATION_FIX.get(orientation)
            if fix is not None:
                rgb = np.asarray(Image.fromarray(rgb).transpose(fix))
            return np.ascontiguousarray(rgb)
        image = ImageOps.exif_transpose(image)
        rgb = _pil_to_rgb_array(image, path)
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow signals unknown formats, truncation and corrupt streams this way.
        raise ImageLoadError(path, f'{type(err).__name__}: {err}') from err
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageLoadError(path, f'decoded to an unexpected shape {rgb.shape}')
    return rgb


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """An opened Pillow image as an upright ``uint8`` RGB array, converted as :func:`load_image_rgb` does.

    Args:
        image: any Pillow image (EXIF orientation applied, alpha dropped, 16-bit gray scaled).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    return _pil_to_rgb_array(ImageOps.exif_transpose(image), getattr(image, 'filename', '') or '<image>')
