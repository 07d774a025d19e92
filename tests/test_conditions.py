"""Tests of the structural condition extractor F_c (icmsr.models.conditions)."""
import glob
import os

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import icmsr  # noqa: F401
from icmsr.models.conditions import ConditionExtractor
from icmsr.registry import MODELS
from realsr_data import realsr_root

REALSR_HR = os.path.join(realsr_root(), 'test_HR')


def _skimage(name: str) -> np.ndarray:
    data = pytest.importorskip('skimage.data')
    return getattr(data, name)()


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255


def _realsr_images(n: int = 2, required: bool = True):
    paths = sorted(glob.glob(os.path.join(REALSR_HR, '*.png')))[:n]
    if not paths and required:
        pytest.skip(f'{REALSR_HR} not found (real test data)')
    return [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]


def _tencentarc_colormap(rgb: np.ndarray) -> np.ndarray:
    """TencentARC's AddSpatialPalette (ldm/data/utils.py), with cv2 itself."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    color = cv2.resize(bgr, (w // 64, h // 64), interpolation=cv2.INTER_CUBIC)
    color = cv2.resize(color, (w, h), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(color, cv2.COLOR_BGR2RGB)


def _images():
    # 512x512, 300x451 (grid 4x7: W//64 and H//64 differ), 400x600, and RealSR's
    # first HR images when present (test_realsr_data_is_present says when not).
    skimage = [_skimage('astronaut'), _skimage('chelsea'), _skimage('coffee')]
    return skimage + _realsr_images(3, required=False)


def test_realsr_data_is_present():
    assert len(_realsr_images(3)) == 3


def test_default_colormap_is_tencentarcs_cv2_recipe():
    extractor = ConditionExtractor('colormap')
    assert extractor.recipe == 'tencentarc'
    for rgb in _images():
        h, w = rgb.shape[:2]
        ref = _tencentarc_colormap(rgb)
        out = extractor(_to_tensor(rgb))
        assert out.shape == (1, 3, h, w) and out.dtype == torch.float32
        # BGR order, a (W // 64, H // 64) grid, nearest back up: the same cv2 calls, no tolerance.
        assert torch.equal(out[0], _to_tensor(ref)[0]), rgb.shape
        assert len(out[0].reshape(3, -1).T.unique(dim=0)) <= (h // 64) * (w // 64)


def test_batched_colormap_on_random_sizes_and_batches():
    rng = np.random.default_rng(0)
    for _ in range(4):
        h, w = (int(v) for v in rng.integers(64, 400, 2))
        batch = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
        out = ConditionExtractor('colormap')(
            torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255)
        for i in range(3):
            assert torch.equal(out[i], _to_tensor(_tencentarc_colormap(batch[i]))[0])


def test_colormap_grid_follows_image_size_and_rejects_tiny_images():
    extractor = ConditionExtractor('colormap')
    assert extractor.grid_size(512, 512) == (8, 8)
    assert extractor.grid_size(300, 451) == (4, 7)
    assert ConditionExtractor('colormap', colormap_size=(2, 3)).grid_size(512, 512) == (2, 3)
    with pytest.raises(ValueError, match='colormap_size'):
        extractor(torch.rand(1, 3, 48, 128))


@pytest.mark.parametrize('name', ['astronaut', 'chelsea'])  # 512x512 and 300x451
def test_antialiased8_recipe_matches_pil_bicubic_then_nearest(name):
    rgb = _skimage(name)
    h, w = rgb.shape[:2]
    # The toolkit's earlier colormap: PIL bicubic (antialiased) to 8x8, nearest back up.
    small = Image.fromarray(rgb).resize((8, 8), Image.BICUBIC)
    ref = np.asarray(small.resize((w, h), Image.NEAREST)).astype(np.float32) / 255
    out = ConditionExtractor('colormap', recipe='antialiased8')(_to_tensor(rgb))
    assert out.shape == (1, 3, h, w) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    diff = np.abs(out[0].permute(1, 2, 0).numpy() - ref)
    # PIL works in 8 bit with clipping between its two passes; we stay in float.
    assert diff.mean() < 1 / 255
    assert (diff > 6 / 255).mean() < 0.01
    blocks = out[0].reshape(3, -1).T.unique(dim=0)
    assert len(blocks) <= 64, 'a colormap has at most 8x8 distinct colours'


def test_colormap_area_matches_cv2_inter_area_and_custom_size():
    rgb = _skimage('astronaut')
    ref_small = cv2.resize(rgb.astype(np.float32) / 255, (4, 4), interpolation=cv2.INTER_AREA)
    ref = np.repeat(np.repeat(ref_small, 128, axis=0), 128, axis=1)
    out = ConditionExtractor('colormap', colormap_size=4, colormap_resize='area')(_to_tensor(rgb))
    # float32 sums over 128x128 blocks round differently in OpenCV and torch.
    assert np.abs(out[0].permute(1, 2, 0).numpy() - ref).max() < 1e-4


def test_default_canny_is_tencentarcs_colour_canny():
    extractor = ConditionExtractor('canny')
    for rgb in _images():
        # TencentARC's AddCannyFreezeThreshold: cv2.Canny(BGR image, 100, 200).
        ref = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 100, 200)
        out = extractor(_to_tensor(rgb))
        assert out.shape == (1, 1, *rgb.shape[:2]) and out.dtype == torch.float32
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(out[0, 0], torch.from_numpy(ref).float() / 255)
        assert 0.005 < out.mean() < 0.3, 'implausible edge density'
    # The test can tell channel orders apart: colour Canny on RGB breaks ties otherwise.
    rgb = _images()[0]
    assert not np.array_equal(cv2.Canny(rgb, 100, 200),
                              cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 100, 200))
    out_rgb = ConditionExtractor('canny', canny_input='rgb')(_to_tensor(rgb))
    assert torch.equal(out_rgb[0, 0], torch.from_numpy(cv2.Canny(rgb, 100, 200)).float() / 255)


def test_gray_canny_option_matches_opencv():
    extractor = ConditionExtractor('canny', recipe='antialiased8')
    assert extractor.canny_input == 'gray'
    for rgb in [_skimage('astronaut')] + _realsr_images(2):
        ref = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 100, 200)
        assert torch.equal(extractor(_to_tensor(rgb))[0, 0], torch.from_numpy(ref).float() / 255)
    rgb = _skimage('astronaut')
    bgr_edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY), 100, 200)
    assert not np.array_equal(bgr_edges, cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 100, 200))


def test_canny_thresholds_and_rounding():
    rgb = _skimage('astronaut')
    x = _to_tensor(rgb) + 0.4 / 255  # rounding must recover the 8-bit image
    ref_lo = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 50, 100)
    out_lo = ConditionExtractor('canny', canny_low=50, canny_high=100, canny_input='gray')(x)
    assert torch.equal(out_lo[0, 0], torch.from_numpy(ref_lo).float() / 255)
    assert out_lo.mean() > ConditionExtractor('canny', canny_input='gray')(x).mean()
    ref_col = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 100, 200)
    assert torch.equal(ConditionExtractor('canny')(x)[0, 0], torch.from_numpy(ref_col).float() / 255)


def test_multi_is_colormap_then_canny_for_a_batch():
    rgb = _skimage('astronaut')[::4, ::4]  # 128 px
    hq = torch.cat([_to_tensor(rgb), _to_tensor(rgb[:, ::-1])]).double()
    conds = MODELS.build(dict(type='ConditionExtractor', mode='multi'))(hq)
    assert isinstance(conds, list) and len(conds) == 2
    color, edges = conds
    assert color.shape == (2, 3, 128, 128) and edges.shape == (2, 1, 128, 128)
    assert color.dtype == edges.dtype == torch.float32
    assert torch.equal(color, ConditionExtractor('colormap')(hq))
    assert torch.equal(edges, ConditionExtractor('canny')(hq))
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    ref = cv2.Canny(cv2.cvtColor(flipped, cv2.COLOR_RGB2BGR), 100, 200)
    assert torch.equal(edges[1, 0], torch.from_numpy(ref).float() / 255)
    assert not torch.equal(edges[0], edges[1]), 'images of a batch must be processed separately'


def test_lq_mode_resizes_like_cv2_bicubic_and_requires_lq():
    rgb = _skimage('astronaut')[::4, ::4]
    hq = _to_tensor(rgb)
    lq_np = cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    lq = torch.from_numpy(lq_np).permute(2, 0, 1)[None]
    out = ConditionExtractor('lq')(hq, lq=lq)
    ref = np.clip(cv2.resize(lq_np, (128, 128), interpolation=cv2.INTER_CUBIC), 0, 1)
    assert out.shape == (1, 3, 128, 128) and out.dtype == torch.float32
    assert np.abs(out[0].permute(1, 2, 0).numpy() - ref).max() < 1e-5
    same_size = torch.rand(1, 3, 128, 128)
    assert torch.equal(ConditionExtractor('lq')(hq, lq=same_size), same_size)
    with pytest.raises(ValueError, match='needs the LQ batch'):
        ConditionExtractor('lq')(hq)
    with pytest.raises(ValueError, match='batch size'):
        ConditionExtractor('lq')(hq, lq=torch.rand(2, 3, 32, 32))


def test_clear_errors():
    with pytest.raises(ValueError, match='mode must be one of'):
        ConditionExtractor('depth')
    with pytest.raises(ValueError, match='recipe must be one of'):
        ConditionExtractor('multi', recipe='pil')
    with pytest.raises(ValueError, match='canny_input must be one of'):
        ConditionExtractor('multi', canny_input='bgr')
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        ConditionExtractor('colormap')(torch.rand(3, 64, 64))
    with pytest.raises(TypeError, match='float'):
        ConditionExtractor('canny')(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_show_conditions_tool_writes_a_labelled_grid(tmp_path):
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        'show_conditions', os.path.join(root, 'tools', 'analysis', 'show_conditions.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = tmp_path / 'cat.png'
    Image.fromarray(_skimage('chelsea')).save(src)  # 451x300: resized and centre-cropped
    written = tool.main(['--input', str(src), '--output', str(tmp_path / 'out'), '--size', '128'])
    grid = np.asarray(Image.open(written[0]))
    assert grid.shape == (128 + tool.LABEL_HEIGHT, 4 * 128, 3)
    canny_panel = grid[tool.LABEL_HEIGHT:, 256:384]
    assert set(np.unique(canny_panel)) <= {0, 255}
    with pytest.raises(SystemExit, match='multiple of 4'):
        tool.main(['--input', str(src), '--output', str(tmp_path), '--size', '130'])
