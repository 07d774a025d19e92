"""Tests of the robust image loader on every kind of file users feed it."""
import pickle
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from icmsr.datasets.image_io import ImageLoadError, is_image_file, load_image_rgb


def _pattern(h: int = 24, w: int = 36) -> np.ndarray:
    """An asymmetric uint8 RGB test image (every pixel distinct in some channel)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 7 % 256, y * 11 % 256, (x * y + 3 * x) % 256], -1).astype(np.uint8)


def _smooth(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth, asymmetric image that survives JPEG with small error."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * x / (w - 1), 255 * y / (h - 1), 255 * (1 - x / (w - 1)) * 0.5], -1)
    img[: h // 3, : w // 4] = (250, 20, 20)  # a red block in the top-left corner
    return img.round().astype(np.uint8)


def _expected_8bit(v16: np.ndarray) -> np.ndarray:
    """Nearest 8-bit value of a 16-bit value, computed independently of the loader."""
    return np.rint(v16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


def test_rgb_png_roundtrip_exact(tmp_path):
    img = _pattern()
    Image.fromarray(img).save(tmp_path / 'a.png')
    out = load_image_rgb(str(tmp_path / 'a.png'))
    assert out.dtype == np.uint8 and out.shape == img.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, img)


def test_16bit_rgb_png_values_rounded(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.integers(0, 65536, size=(10, 12, 3)).astype(np.uint16)
    # Edge values: exact 8-bit multiples, just below/above a rounding boundary, extremes.
    v[0, :6, 0] = [0, 65535, 128, 129, 200 * 257, 200 * 257 + 128]
    cv2.imwrite(str(tmp_path / 'a16.png'), v[..., ::-1])  # OpenCV writes BGR
    out = load_image_rgb(str(tmp_path / 'a16.png'))
    assert out.dtype == np.uint8 and out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out, _expected_8bit(v))
    assert list(out[0, :6, 0]) == [0, 255, 0, 1, 200, 200]
    # Dropping the low byte (what a naive 8-bit read does) would be wrong here.
    assert not np.array_equal(out, (v >> 8).astype(np.uint8))


@pytest.mark.parametrize('channels', [1, 3])
def test_16bit_tiff(tmp_path, channels):
    v = (np.arange(4 * 5 * channels).reshape(4, 5, channels) * 3001 + 129).astype(np.uint16)
    cv2.imwrite(str(tmp_path / 'a16.tif'), v[..., ::-1] if channels == 3 else v[..., 0])
    out = load_image_rgb(str(tmp_path / 'a16.tif'))
    np.testing.assert_array_equal(out, np.broadcast_to(_expected_8bit(v), (4, 5, 3)))


def test_16bit_gray_and_rgba_png(tmp_path):
    g = (np.arange(48).reshape(6, 8) * 1365).astype(np.uint16)
    cv2.imwrite(str(tmp_path / 'g16.png'), g)
    out = load_image_rgb(str(tmp_path / 'g16.png'))
    assert out.shape == (6, 8, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], _expected_8bit(g))
    rgba = np.zeros((6, 8, 4), np.uint16)
    rgba[..., :3] = np.stack([g, g[::-1], 65535 - g], -1)
    rgba[..., 3] = 0  # fully transparent: colours must survive untouched
    cv2.imwrite(str(tmp_path / 'rgba16.png'), rgba[..., [2, 1, 0, 3]])
    out = load_image_rgb(str(tmp_path / 'rgba16.png'))
    np.testing.assert_array_equal(out, _expected_8bit(rgba[..., :3]))


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    g = _pattern()[..., 0]
    Image.fromarray(g, mode='L').save(tmp_path / 'g.png')
    out = load_image_rgb(str(tmp_path / 'g.png'))
    assert out.shape == g.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_rgba_png_alpha_dropped_not_composited(tmp_path):
    rgb = _pattern()
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    Image.fromarray(np.dstack([rgb, alpha]), mode='RGBA').save(tmp_path / 'a.png')
    np.testing.assert_array_equal(load_image_rgb(str(tmp_path / 'a.png')), rgb)


def test_palette_png(tmp_path):
    p = Image.fromarray(_pattern()).quantize(colors=16)
    p.save(tmp_path / 'p.png')
    assert Image.open(tmp_path / 'p.png').mode == 'P'
    palette = np.array(p.getpalette()[:16 * 3], np.uint8).reshape(-1, 3)
    expected = palette[np.asarray(p)]  # independent palette lookup
    np.testing.assert_array_equal(load_image_rgb(str(tmp_path / 'p.png')), expected)


def test_cmyk_jpeg(tmp_path):
    rgb = _smooth()
    Image.fromarray(rgb).convert('CMYK').save(tmp_path / 'c.jpg', quality=95)
    assert Image.open(tmp_path / 'c.jpg').mode == 'CMYK'
    out = load_image_rgb(str(tmp_path / 'c.jpg'))
    assert out.shape == rgb.shape
    # JPEG is lossy; an inverted or channel-swapped decode would be off by ~100.
    assert np.abs(out.astype(int) - rgb).mean() < 3


# EXIF orientation -> the numpy operation that shows the stored pixels upright.
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # stored rotated: turn 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize('orientation', sorted(_UPRIGHT))
def test_exif_orientation_jpeg(tmp_path, orientation):
    stored = _smooth()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / 'o.jpg', quality=98, exif=exif)
    out = load_image_rgb(str(tmp_path / 'o.jpg'))
    expected = _UPRIGHT[orientation](stored)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected).mean() < 3


def _png_with_exif(rgb16: np.ndarray, orientation: int) -> bytes:
    """A 16-bit PNG with an eXIf chunk right after IHDR."""
    ok, buf = cv2.imencode('.png', rgb16[..., ::-1])
    assert ok
    data = buf.tobytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()[6:]  # PNG stores the TIFF block without 'Exif\0\0'
    chunk = (struct.pack('>I', len(payload)) + b'eXIf' + payload
             + struct.pack('>I', zlib.crc32(b'eXIf' + payload)))
    ihdr_end = 8 + 25  # signature + IHDR chunk
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def test_exif_orientation_16bit_png(tmp_path):
    v = (np.arange(5 * 7 * 3).reshape(5, 7, 3) * 600).astype(np.uint16)
    (tmp_path / 'o16.png').write_bytes(_png_with_exif(v, 6))
    out = load_image_rgb(str(tmp_path / 'o16.png'))
    np.testing.assert_array_equal(out, np.rot90(_expected_8bit(v), k=-1))


@pytest.mark.parametrize('ext', ['png', 'jpg'])
def test_truncated_file_raises_naming_it(tmp_path, ext, monkeypatch):
    path = tmp_path / f'cut.{ext}'
    Image.fromarray(_pattern(64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match='cut') as info:
        load_image_rgb(str(path))
    assert info.value.path == str(path)
    # Even when another library tells Pillow to accept truncated files.
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
    with pytest.raises(ImageLoadError):
        load_image_rgb(str(path))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards


def test_truncated_16bit_png_raises(tmp_path):
    path = tmp_path / 'cut16.png'
    cv2.imwrite(str(path), (np.arange(64 * 64 * 3).reshape(64, 64, 3) % 65536).astype(np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match='cut16'):
        load_image_rgb(str(path))


@pytest.mark.parametrize('content', [b'', b'not an image at all', None])
def test_unreadable_files_raise(tmp_path, content):
    path = tmp_path / 'bad.png'
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageLoadError, match='bad.png') as info:
        load_image_rgb(str(path))
    assert isinstance(info.value, OSError)
    # Survives the trip from a DataLoader worker to the main process.
    again = pickle.loads(pickle.dumps(info.value))
    assert again.path == str(path) and str(again) == str(info.value)


def test_is_image_file():
    assert is_image_file('a/B.PNG') and is_image_file('x.jpeg') and is_image_file('y.webp')
    assert not is_image_file('meta_info.txt') and not is_image_file('captions.json')


@pytest.mark.parametrize('ext', ['gif', 'tif', 'png'])  # animated GIF, multi-page TIFF, APNG
def test_multi_frame_file_warns_with_its_frame_count_and_reads_frame_one(tmp_path, ext):
    from icmsr.datasets.image_io import MultiFrameWarning
    frames = [Image.fromarray(np.roll(_pattern(), 5 * k, axis=1)) for k in range(4)]
    path = str(tmp_path / f'anim.{ext}')
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.warns(MultiFrameWarning, match=r'anim\.' + ext + r': 4 frames') as caught:
        out = load_image_rgb(path)
    assert caught[0].message.frames == 4
    np.testing.assert_array_equal(out, np.asarray(Image.open(path).convert('RGB')))


def test_load_image_keeps_gray_and_alpha(tmp_path):
    from icmsr.datasets.image_io import load_image
    rgb = _pattern()
    g = rgb[..., 0]
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    Image.fromarray(g, mode='L').save(tmp_path / 'g.png')
    Image.fromarray(np.dstack([rgb, alpha]), mode='RGBA').save(tmp_path / 'a.png')
    Image.fromarray(np.dstack([g, alpha]), mode='LA').save(tmp_path / 'la.png')
    np.testing.assert_array_equal(load_image(str(tmp_path / 'g.png')), g)
    np.testing.assert_array_equal(load_image(str(tmp_path / 'a.png')), np.dstack([rgb, alpha]))
    np.testing.assert_array_equal(load_image(str(tmp_path / 'la.png')), np.dstack([g, g, g, alpha]))
    # 16-bit gray stays gray, 16-bit RGBA keeps its alpha (both scaled to 8 bit).
    g16 = (np.arange(48).reshape(6, 8) * 1365).astype(np.uint16)
    cv2.imwrite(str(tmp_path / 'g16.png'), g16)
    np.testing.assert_array_equal(load_image(str(tmp_path / 'g16.png')), _expected_8bit(g16))
    rgba16 = np.stack([g16, g16[::-1], 65535 - g16, g16[:, ::-1]], -1)
    cv2.imwrite(str(tmp_path / 'rgba16.png'), rgba16[..., [2, 1, 0, 3]])
    np.testing.assert_array_equal(load_image(str(tmp_path / 'rgba16.png')), _expected_8bit(rgba16))
    # A palette image with a transparent entry comes back RGBA.
    p = Image.fromarray(rgb).quantize(colors=8)
    p.info['transparency'] = 0
    p.save(tmp_path / 'pt.png', transparency=0)
    out = load_image(str(tmp_path / 'pt.png'))
    assert out.shape == rgb.shape[:2] + (4,)
    np.testing.assert_array_equal(out[..., 3], np.where(np.asarray(p) == 0, 0, 255))
