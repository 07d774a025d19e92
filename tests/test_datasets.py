"""Tests of the datasets, the pipeline transforms and the synthetic data sets."""
import json
import os
import os.path as osp
import warnings

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from PIL import Image

from demo_data import make_synthetic_paired_set, skimage_training_images
from icmsr.datasets import BadImageWarning, HQImageDataset, ImageLoadError, PairedImageDataset
from icmsr.registry import DATASETS, TRANSFORMS
from icmsr.utils.setup_env import register_all_modules
from icmsr.structures import SRDataSample
from realsr_data import realsr_root

REALSR = realsr_root()
PAIRED_PIPELINE = [dict(type='LoadImageFromFile', key='lq'),
                   dict(type='LoadImageFromFile', key='gt'), dict(type='PackSRInputs')]
TRAIN_PIPELINE = [dict(type='LoadImageFromFile', key='gt'),
                  dict(type='RandomCropPad', crop_size=16), dict(type='RandomFlip'),
                  dict(type='PackSRInputs')]


def _write(path, value, size=(20, 24)):
    """Write a constant-colour PNG/JPEG whose red channel encodes ``value``."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    img = np.zeros(size + (3,), np.uint8)
    img[..., 0], img[..., 1] = value, 255 - value
    Image.fromarray(img).save(path)
    return img


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _truncate(path):
    data = _read(path)
    with open(path, 'wb') as f:
        f.write(data[: len(data) // 2])


def _smooth(h, w):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * x / (w - 1), 255 * y / (h - 1), 128 + 60 * np.sin(x / 5)], -1)
    return img.round().astype(np.uint8)


# ----------------------------------------------------------------- paired sets
def test_paired_built_from_config_pairs_by_name(tmp_path):
    register_all_modules()
    root = tmp_path / 'set'
    # LQ stems derive from GT stems by the template; extensions differ; files are
    # written in shuffled order, so only matching by name pairs them correctly.
    ids = {'img10': 10, 'img2': 2, 'a-1': 77, 'a': 40}
    for name in ['img2', 'a', 'img10', 'a-1']:
        _write(str(root / 'HR' / f'{name}.png'), ids[name], (16, 16))
    for name in ['a-1', 'img10', 'a', 'img2']:
        _write(str(root / 'LR' / f'{name}x4.{"bmp" if name == "a" else "png"}'), ids[name], (4, 4))
    ds = DATASETS.build(dict(type='PairedImageDataset', data_root=str(root), lq_dir='LR',
                             gt_dir='HR', filename_tmpl='{}x4', pipeline=PAIRED_PIPELINE))
    assert isinstance(ds, PairedImageDataset) and len(ds) == 4
    assert [ds.get_data_info(i)['key'] for i in range(4)] == sorted(ids)
    for i in range(len(ds)):
        item = ds[i]
        key = item['data_samples'].key
        assert int(item['inputs']['gt'][0, 0, 0]) == ids[key]
        assert int(item['inputs']['lq'][0, 0, 0]) == ids[key]
        assert item['inputs']['lq'].shape == (3, 4, 4)


def test_paired_default_stablesr_layout_and_unmatched_error(tmp_path):
    for i in range(14):
        _write(str(tmp_path / 'test_HR' / f'g{i:02d}.png'), i)
    for i in range(2):
        _write(str(tmp_path / 'test_LR' / f'g{i:02d}.png'), i)
    _write(str(tmp_path / 'test_LR' / 'stray.png'), 3)
    with pytest.raises(ValueError) as info:
        PairedImageDataset(data_root=str(tmp_path))
    msg = str(info.value)
    assert 'GT without LQ' in msg and '12:' in msg and "'g02.png'" in msg
    assert '(2 more)' in msg  # only the first 10 names are listed
    assert 'LQ without GT' in msg and "1: 'stray.png'" in msg and '2 pairs matched' in msg


def test_paired_lq_only_mode(tmp_path):
    for i, name in enumerate(['b', 'a']):
        _write(str(tmp_path / 'in' / f'{name}.jpg'), 10 * i)
    pipeline = [dict(type='LoadImageFromFile', key='lq'),
                dict(type='LoadImageFromFile', key='gt', allow_missing=True),
                dict(type='PackSRInputs')]
    ds = PairedImageDataset(data_root=str(tmp_path), lq_dir='in', gt_dir=None,
                            prompt='a photo', pipeline=pipeline)
    item = ds[0]
    assert set(item['inputs']) == {'lq'}
    meta = item['data_samples'].metainfo
    assert meta == dict(key='a', gt_path=None, lq_path=str(tmp_path / 'in' / 'a.jpg'),
                        prompt='a photo')
    strict = PairedImageDataset(data_root=str(tmp_path), lq_dir='in', gt_dir=None,
                                pipeline=PAIRED_PIPELINE)
    with pytest.raises(KeyError, match='LQ-only'):
        strict[0]


def test_corrupt_test_image_is_an_error(tmp_path):
    for i in range(3):
        _write(str(tmp_path / 'test_HR' / f'{i}.png'), i)
        _write(str(tmp_path / 'test_LR' / f'{i}.png'), i)
    _truncate(str(tmp_path / 'test_LR' / '1.png'))
    ds = PairedImageDataset(data_root=str(tmp_path), pipeline=PAIRED_PIPELINE)
    ds[0]
    with pytest.raises(ImageLoadError, match=r'test_LR/1\.png'):
        ds[1]


@pytest.mark.parametrize('cls', ['PairedImageDataset', 'HQImageDataset'])
def test_missing_and_empty_folders(tmp_path, cls):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('not an image')
    if cls == 'PairedImageDataset':
        missing, empty = dict(lq_dir='nope', gt_dir=None), dict(lq_dir='empty', gt_dir=None)
    else:
        missing, empty = dict(folders='nope'), dict(folders=['empty'])
    with pytest.raises(FileNotFoundError, match='nope'):
        DATASETS.build(dict(type=cls, data_root=str(tmp_path), **missing))
    with pytest.raises(ValueError, match='contains no images'):
        DATASETS.build(dict(type=cls, data_root=str(tmp_path), **empty))


# ------------------------------------------------------------------ HQ sets
def test_hq_folders_meta_files_and_captions(tmp_path):
    _write(str(tmp_path / 'DIV2K' / '0001.png'), 1)
    _write(str(tmp_path / 'DIV2K' / 'sub' / '0002.jpg'), 2)
    (tmp_path / 'DIV2K' / 'readme.txt').write_text('ignored')
    _write(str(tmp_path / 'LSDIR' / 'HR' / '0000001.png'), 3)
    _write(str(tmp_path / 'LSDIR' / 'HR' / '0000002.png'), 4)
    (tmp_path / 'lsdir_meta.txt').write_text(
        '# LSDIR subset\nHR/0000002.png (20,24,3)\n\nHR/0000001.png\n')
    (tmp_path / 'div2k_meta.txt').write_text('DIV2K/0001.png\n')
    (tmp_path / 'captions.json').write_text(json.dumps(
        {'0001': 'a cat', 'sub/0002.jpg': 'a dog', '0000002.png': 'a tree'}))
    with pytest.warns(UserWarning, match='1 of 5 images have no caption'):
        ds = HQImageDataset(
            data_root=str(tmp_path), folders='DIV2K', caption_file='captions.json',
            prompt='fallback',
            meta_files=[dict(file='lsdir_meta.txt', root='LSDIR'), 'div2k_meta.txt'])
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [(d['key'], d['prompt']) for d in infos] == [
        ('0001', 'a cat'), ('sub/0002', 'a dog'), ('HR/0000002', 'a tree'),
        ('HR/0000001', 'fallback'), ('DIV2K/0001', 'a cat')]  # matched by stem
    assert infos[1]['gt_path'] == osp.join(str(tmp_path), 'DIV2K', 'sub/0002.jpg')
    assert all(d['lq_path'] is None for d in infos)
    flat = HQImageDataset(data_root=str(tmp_path), folders='DIV2K', recursive=False)
    assert len(flat) == 1


def test_hq_txt_captions_and_missing_meta_entries(tmp_path):
    _write(str(tmp_path / 'hq' / 'x.png'), 1)
    (tmp_path / 'caps.txt').write_text('x\ta red\tbarn\n')
    ds = HQImageDataset(folders=str(tmp_path / 'hq'), caption_file=str(tmp_path / 'caps.txt'))
    assert ds.get_data_info(0)['prompt'] == 'a red\tbarn'
    (tmp_path / 'bad_caps.txt').write_text('x a red barn\n')
    with pytest.raises(ValueError, match='bad_caps.txt:1'):
        HQImageDataset(folders=str(tmp_path / 'hq'), caption_file=str(tmp_path / 'bad_caps.txt'))
    (tmp_path / 'meta.txt').write_text('hq/x.png\nhq/gone.png\n')
    with pytest.raises(FileNotFoundError, match=r"1 of 2 .*gone\.png"):
        HQImageDataset(data_root=str(tmp_path), meta_files='meta.txt')
    with pytest.raises(ValueError, match='folders or meta_files'):
        HQImageDataset(data_root=str(tmp_path))
    with pytest.raises(ValueError, match='on_bad_image'):
        HQImageDataset(folders=str(tmp_path / 'hq'), on_bad_image='ignore')


def test_hq_truncated_image_skipped_with_warning(tmp_path):
    for i in range(4):
        _write(str(tmp_path / f'{i}.png'), 10 * i)
    _truncate(str(tmp_path / '2.png'))
    ds = DATASETS.build(dict(type='HQImageDataset', folders=str(tmp_path),
                             pipeline=TRAIN_PIPELINE))
    np.random.seed(0)
    with pytest.warns(BadImageWarning, match=r"2\.png"):
        item = ds[2]
    assert item['data_samples'].key in {'0', '1', '3'}
    assert item['inputs']['gt'].shape == (3, 16, 16)
    # The bad index is remembered: it is never drawn as a replacement again.
    assert ds._bad_indices == {2}
    assert all(ds._rand_another() != 2 for _ in range(100))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for _ in range(20):  # the other items still load without any warning
            assert ds[0]['data_samples'].key == '0'
    strict = HQImageDataset(folders=str(tmp_path), pipeline=TRAIN_PIPELINE, on_bad_image='raise')
    with pytest.raises(ImageLoadError, match=r'2\.png'):
        strict[2]


def test_hq_all_images_bad_is_a_clear_error(tmp_path):
    for i in range(2):
        _write(str(tmp_path / f'{i}.png'), i)
        _truncate(str(tmp_path / f'{i}.png'))
    ds = HQImageDataset(folders=str(tmp_path), pipeline=TRAIN_PIPELINE)
    with pytest.warns(BadImageWarning), pytest.raises(RuntimeError, match='none of the 2'):
        ds[0]


def test_dataloader_batch_follows_contract(tmp_path):
    for i in range(3):
        _write(str(tmp_path / f'{i}.png'), i, (30, 20))
    ds = HQImageDataset(folders=str(tmp_path), prompt='p', pipeline=TRAIN_PIPELINE)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=pseudo_collate)))
    assert set(batch) == {'inputs', 'data_samples'} and set(batch['inputs']) == {'gt'}
    assert [t.shape for t in batch['inputs']['gt']] == [(3, 16, 16)] * 3
    assert all(t.dtype == torch.uint8 for t in batch['inputs']['gt'])
    assert [s.prompt for s in batch['data_samples']] == ['p'] * 3


# --------------------------------------------------------------- transforms
def test_pack_matches_contract():
    pack = TRANSFORMS.build(dict(type='PackSRInputs'))
    gt, lq = _smooth(8, 12), _smooth(2, 3)
    out = pack(dict(gt=gt, lq=lq, key='k', gt_path='g.png', lq_path='l.png', prompt='x',
                    crop_bbox=(0, 0, 8, 12)))
    assert set(out) == {'inputs', 'data_samples'} and set(out['inputs']) == {'gt', 'lq'}
    for name, img in (('gt', gt), ('lq', lq)):
        t = out['inputs'][name]
        assert t.dtype == torch.uint8 and t.is_contiguous() and t.shape == (3,) + img.shape[:2]
        np.testing.assert_array_equal(t.numpy(), img.transpose(2, 0, 1))
    sample = out['data_samples']
    assert isinstance(sample, SRDataSample)
    assert sample.metainfo == dict(key='k', gt_path='g.png', lq_path='l.png', prompt='x')
    assert pack(dict(gt=gt, key='k', gt_path='g'))['data_samples'].metainfo == dict(
        key='k', gt_path='g', lq_path=None, prompt='')
    with pytest.raises(TypeError, match='uint8'):
        pack(dict(gt=gt.astype(np.float32), key='k'))


@pytest.mark.parametrize('shape', [(30, 40), (100, 40), (5, 1)])
def test_crop_small_image_reflect(shape):
    img = _smooth(*shape) if min(shape) > 1 else np.arange(15, dtype=np.uint8).reshape(5, 1, 3)
    crop = TRANSFORMS.build(dict(type='RandomCropPad', crop_size=64, small_image='reflect'))
    np.random.seed(1)
    out = crop(dict(gt=img.copy()))
    assert out['gt'].shape == (64, 64, 3) and out['small_image_fix'] == 'reflect'
    # Independent check: reflect-pad to >= 64 centred, then take the reported window.
    ph, pw = max(0, 64 - shape[0]), max(0, 64 - shape[1])
    padded = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), 'reflect')
    top, left, h, w = out['crop_bbox']
    np.testing.assert_array_equal(out['gt'], padded[top:top + h, left:left + w])
    if shape == (30, 40):  # original centred, mirrored without repeating the edge row
        np.testing.assert_array_equal(out['gt'][17:47, 12:52], img)
        np.testing.assert_array_equal(out['gt'][16, 12:52], img[1])


def test_crop_small_image_upscale():
    img = _smooth(30, 40)
    crop = TRANSFORMS.build(dict(type='RandomCropPad', crop_size=64, small_image='upscale'))
    np.random.seed(0)
    out = crop(dict(gt=img.copy()))
    assert out['gt'].shape == (64, 64, 3) and out['small_image_fix'] == 'upscale'
    top, left, _, _ = out['crop_bbox']
    assert top == 0 and 0 <= left <= 85 - 64  # 30x40 -> 64x85, aspect kept
    reference = np.asarray(Image.fromarray(img).resize((85, 64), Image.BICUBIC))
    diff = np.abs(out['gt'].astype(int) - reference[:, left:left + 64]).mean()
    assert diff < 2.5  # OpenCV vs Pillow bicubic differ slightly; a wrong window would not
    with pytest.raises(ValueError, match='smaller than crop_size'):
        TRANSFORMS.build(dict(type='RandomCropPad', crop_size=64, small_image='raise'))(
            dict(gt=img, key='tiny'))


def test_crop_large_image_same_window_and_seeded():
    gt = _smooth(90, 120)
    other = 255 - gt
    crop = TRANSFORMS.build(dict(type='RandomCropPad', crop_size=(32, 48), keys=['gt', 'mask']))

    def run(seed):
        np.random.seed(seed)
        return [crop(dict(gt=gt, mask=other)) for _ in range(5)]

    first, again, other_seed = run(3), run(3), run(4)
    for out in first:
        top, left, h, w = out['crop_bbox']
        assert (h, w) == (32, 48) and out['gt'].shape == (32, 48, 3)
        np.testing.assert_array_equal(out['gt'], gt[top:top + h, left:left + w])
        np.testing.assert_array_equal(out['mask'], 255 - out['gt'])
    assert [o['crop_bbox'] for o in first] == [o['crop_bbox'] for o in again]
    assert [o['crop_bbox'] for o in first] != [o['crop_bbox'] for o in other_seed]
    with pytest.raises(ValueError, match='differ in size'):
        crop(dict(gt=gt, mask=other[:50]))


def test_flip():
    img = _smooth(6, 9)
    always = TRANSFORMS.build(dict(type='RandomFlip', prob=1.0, vertical_prob=1.0))
    out = always(dict(gt=img.copy()))
    np.testing.assert_array_equal(out['gt'], img[::-1, ::-1])
    assert out['gt'].flags.c_contiguous and out['flip'] == (True, True)
    never = TRANSFORMS.build(dict(type='RandomFlip', prob=0.0))
    np.testing.assert_array_equal(never(dict(gt=img.copy()))['gt'], img)
    half = TRANSFORMS.build(dict(type='RandomFlip'))
    np.random.seed(0)
    flips = [half(dict(gt=img))['flip'] for _ in range(2000)]
    assert 0.45 < np.mean([h for h, _ in flips]) < 0.55
    assert not any(v for _, v in flips)


# ------------------------------------------------------------------ real data
@pytest.mark.skipif(not osp.isdir(osp.join(REALSR, 'test_LR')),
                    reason=f'RealSR test set not found at {REALSR}')
def test_realsr_pairs():
    ds = DATASETS.build(dict(type='PairedImageDataset', data_root=REALSR,
                             pipeline=PAIRED_PIPELINE))
    assert len(ds) == 100
    assert ds.get_data_info(0)['key'] == sorted(os.listdir(osp.join(REALSR, 'test_HR')))[0][:-4]
    psnr_matched, psnr_shifted = [], []
    items = [ds[i] for i in range(len(ds))]
    for i, item in enumerate(items):
        assert item['inputs']['gt'].shape == (3, 512, 512)
        assert item['inputs']['lq'].shape == (3, 128, 128)
        sample = item['data_samples']
        assert sample.key == osp.splitext(osp.basename(sample.gt_path))[0]
        if i < 10:  # the LQ must look like its own GT, not the next one
            up = cv2.resize(item['inputs']['lq'].permute(1, 2, 0).numpy(), (512, 512),
                            interpolation=cv2.INTER_CUBIC).astype(np.float64)
            for gt, acc in ((item, psnr_matched), (items[i + 1], psnr_shifted)):
                mse = np.mean((up - gt['inputs']['gt'].permute(1, 2, 0).numpy()) ** 2)
                acc.append(10 * np.log10(255 ** 2 / mse))
    assert min(psnr_matched) > 20 and min(psnr_matched) > max(psnr_shifted) + 3


# ---------------------------------------------------------------- synthetic sets
def test_synthetic_paired_set_deterministic(tmp_path):
    a = make_synthetic_paired_set(str(tmp_path / 'a'), num_images=3, gt_size=32, scale=4, seed=5)
    b = make_synthetic_paired_set(str(tmp_path / 'b'), num_images=3, gt_size=32, scale=4, seed=5)
    c = make_synthetic_paired_set(str(tmp_path / 'c'), num_images=3, gt_size=32, scale=4, seed=6)
    assert a['names'] == b['names'] == c['names'] and len(a['names']) == 3
    for sub in ('test_HR', 'test_LR'):
        for name in a['names']:
            assert _read(osp.join(a['root'], sub, name)) == _read(osp.join(b['root'], sub, name))
    assert any(_read(osp.join(a['lq_dir'], n)) != _read(osp.join(c['lq_dir'], n))
               for n in a['names'])
    ds = PairedImageDataset(data_root=a['root'], pipeline=PAIRED_PIPELINE)
    for item in (ds[i] for i in range(len(ds))):
        gt = item['inputs']['gt'].permute(1, 2, 0).numpy()
        lq = item['inputs']['lq'].permute(1, 2, 0).numpy().astype(np.float64)
        assert gt.shape == (32, 32, 3) and lq.shape == (8, 8, 3)
        down = cv2.resize(gt, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float64)
        err = np.sqrt(np.mean((down - lq) ** 2))
        assert 1.0 < err < 40  # degraded, but still the same picture
    with pytest.raises(ValueError, match='multiple of scale'):
        make_synthetic_paired_set(str(tmp_path / 'd'), gt_size=30, scale=4)


def test_skimage_training_images(tmp_path):
    paths = skimage_training_images(str(tmp_path), 48, names=['astronaut', 'camera'])
    assert [osp.basename(p) for p in paths] == ['astronaut.png', 'camera.png']
    for p in paths:
        img = cv2.imread(p)
        assert img.shape == (48, 48, 3)
    ds = HQImageDataset(folders=str(tmp_path), pipeline=TRAIN_PIPELINE)
    assert len(ds) == 2 and ds[0]['inputs']['gt'].shape == (3, 16, 16)


# ------------------------------------------------------------ shipped configs
@pytest.mark.skipif(not osp.isdir(osp.join(REALSR, 'test_LR')),
                    reason=f'RealSR test set not found at {REALSR}')
def test_shipped_dataset_configs_build(tmp_path):
    from mmengine.config import Config
    register_all_modules()
    cfg = Config.fromfile('configs/_base_/datasets/stablesr_testsets.py')
    test_set = cfg.test_dataloader[1].dataset
    test_set.data_root = REALSR
    ds = DATASETS.build(test_set)
    assert len(ds) == 100 and ds.test_mode and ds[0]['inputs']['lq'].shape == (3, 128, 128)
    skimage_training_images(str(tmp_path / 'DIV2K' / 'DIV2K_train_HR'), 40, names=['coffee'])
    skimage_training_images(str(tmp_path / 'LSDIR' / 'HR' / 'train' / '0001000'), 600,
                            names=['astronaut'])
    cfg = Config.fromfile('configs/_base_/datasets/hq_div2k_lsdir.py')
    train_set = cfg.train_dataloader.dataset
    train_set.data_root = str(tmp_path)
    ds = DATASETS.build(train_set)
    assert len(ds) == 2
    for i in range(2):  # the 40 px image is padded, the 600 px one cropped
        assert ds[i]['inputs']['gt'].shape == (3, 512, 512)


def test_one_hidden_file_rule_for_every_folder_listing(tmp_path):
    """Datasets, infer inputs and eval_folder list a folder through one lister, one rule."""
    from icmsr.apis.inputs import collect_inputs
    from icmsr.fileio.file_lists import scan_images
    from icmsr.evaluation.folder_eval import list_images
    for name in ('a.png', 'B.JPG', '._a.png', '.hidden.png', '.a.png.x1.tmp.png',
                 'notes.txt', '.cache/c.png', 'sub/d.png'):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'x')
    flat = ['B.JPG', 'a.png']
    assert scan_images(str(tmp_path), recursive=False) == flat
    assert [r for _, r in collect_inputs(str(tmp_path))] == flat
    assert sorted(os.path.basename(p) for p in list_images(str(tmp_path)).values()) == flat
    deep = ['B.JPG', 'a.png', 'sub/d.png']
    assert scan_images(str(tmp_path)) == deep
    assert [r for _, r in collect_inputs(str(tmp_path), recursive=True)] == deep
    assert [os.path.basename(p) for p, _ in collect_inputs(str(tmp_path / '*.png'))] == ['a.png']


def test_one_caption_reader_for_datasets_and_inference(tmp_path):
    from icmsr.apis.inputs import PromptSource
    from icmsr.fileio.captions import load_captions, lookup_caption
    (tmp_path / 'c.tsv').write_text('# comment\nsub/x.png\tan x\ny\ta y\n')
    table = load_captions(str(tmp_path / 'c.tsv'))
    assert lookup_caption(table, 'sub/x.png') == 'an x' and lookup_caption(table, 'y.jpg') == 'a y'
    prompts = PromptSource('fallback', str(tmp_path / 'c.tsv'))
    assert prompts('in/y.png') == 'a y'  # the '#' line is a comment for both
