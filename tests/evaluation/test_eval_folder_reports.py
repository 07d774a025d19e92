"""eval_folder pairing, own-output exclusion, cache resume, and the report formats."""
import csv
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from icmsr.evaluation.folder_eval import evaluate_folder, list_images, pair_folders
from icmsr.evaluation.reports import make_summary, markdown_table, write_json

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, os.path.join(REPO, 'tools'))
import eval_folder  # noqa: E402


def _img(path, seed, size=32):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _psnr_y(a_path, b_path):
    """Independent PSNR on Y (BT.601, basicsr's formula, no rounding) in float64."""
    def y(p):
        rgb = np.asarray(Image.open(p).convert('RGB'), np.float64)
        return 16.0 + rgb @ np.array([65.481, 128.553, 24.966]) / 255.0
    mse = np.mean((y(a_path) - y(b_path)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture()
def folders(tmp_path):
    pred, gt = tmp_path / 'pred', tmp_path / 'gt'
    pred.mkdir()
    gt.mkdir()
    for i, name in enumerate(['a', 'b', 'c']):
        _img(gt / f'{name}.png', i)
        # prediction = GT plus noise, so PSNR is finite and differs per image
        arr = np.asarray(Image.open(gt / f'{name}.png'), np.int16)
        noise = np.random.default_rng(10 + i).integers(-20 * (i + 1), 20 * (i + 1), arr.shape)
        Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8)).save(pred / f'{name}.png')
    _img(pred / 'only_pred.jpg', 7)       # no GT: skipped
    _img(gt / 'only_gt.png', 8)           # no prediction: skipped
    (pred / 'readme.txt').write_text('x')  # not an image
    (pred / 'sub').mkdir()
    _img(pred / 'sub' / 'a.png', 9)       # not directly inside: never read
    return str(pred), str(gt)


def test_pairing_by_stem_only_images(folders):
    pred, gt = folders
    pairs, extra = pair_folders(pred, gt)
    assert [k for k, _, _ in pairs] == ['a', 'b', 'c']
    assert extra == {'pred_only': ['only_pred'], 'gt_only': ['only_gt']}
    assert all(p.startswith(pred) and g.startswith(gt) for _, p, g in pairs)


def test_duplicate_stems_and_no_pairs_are_errors(tmp_path, folders):
    pred, gt = folders
    _img(os.path.join(pred, 'a.jpg'), 3)
    with pytest.raises(ValueError, match="Two images named 'a'"):
        list_images(pred)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='No image of'):
        pair_folders(gt, str(empty))


def test_own_output_folder_inside_pred_is_never_scored(folders):
    pred, gt = folders
    out = os.path.join(pred, 'eval')
    # A run whose outputs sit in the prediction folder, and an image dropped
    # there (e.g. a saved figure) must not be paired or scored on the next run.
    code = eval_folder.main(['--pred', pred, '--gt', gt, '--metrics', 'psnr', '--out', pred,
                             '--name', 'eval', '--datasets', 'Toy', '--no-progress'])
    assert code == 0
    _img(os.path.join(out, 'a.png'), 11)
    res = evaluate_folder(pred, gt, out, 'Toy', ['psnr'], 'eval', progress=False,
                          scorers=None)
    assert res['num_images'] == 3 and [r['key'] for r in res['rows']] == ['a', 'b', 'c']


def test_cache_resume_scores_each_image_once(folders, tmp_path):
    pred, gt = folders
    calls = []

    class Interrupt(Exception):
        pass

    def psnr(p, g):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupt  # dies while scoring the second image
        return [float(-torch.mean((p - g) ** 2))]

    out = str(tmp_path / 'out')
    with pytest.raises(Interrupt):
        evaluate_folder(pred, gt, out, 'Toy', ['psnr'], 'm', scorers={'psnr': psnr},
                        progress=False)
    assert len(calls) == 2
    counted = []

    def psnr2(p, g):
        counted.append(1)
        return [float(-torch.mean((p - g) ** 2))]

    res = evaluate_folder(pred, gt, out, 'Toy', ['psnr'], 'm', scorers={'psnr': psnr2},
                          progress=False)
    assert len(counted) == 2 and res['num_images'] == 3  # 'a' came from the cache
    counted.clear()
    evaluate_folder(pred, gt, out, 'Toy', ['psnr'], 'm', scorers={'psnr': psnr2}, progress=False)
    assert not counted  # everything cached
    # A changed prediction file is scored again; others stay cached.
    _img(os.path.join(pred, 'b.png'), 42)
    evaluate_folder(pred, gt, out, 'Toy', ['psnr'], 'm', scorers={'psnr': psnr2}, progress=False)
    assert len(counted) == 1


def test_eval_folder_outputs_csv_json_markdown(folders, tmp_path):
    pred, gt = folders
    out = str(tmp_path / 'reports')
    assert eval_folder.main(['--pred', pred, '--gt', gt, '--metrics', 'psnr', 'ssim',
                             '--out', out, '--name', 'Noisy', '--datasets', 'Toy',
                             '--device', 'cpu', '--no-progress']) == 0
    rows = list(csv.DictReader(open(os.path.join(out, 'Noisy', 'Toy', 'per_image.csv'))))
    assert [r['key'] for r in rows] == ['a', 'b', 'c'] and list(rows[0]) == ['key', 'psnr', 'ssim']
    for r in rows:
        expect = _psnr_y(os.path.join(pred, r['key'] + '.png'), os.path.join(gt, r['key'] + '.png'))
        assert float(r['psnr']) == pytest.approx(expect, abs=1e-3)
    summary = json.load(open(os.path.join(out, 'Noisy', 'summary.json')))
    assert summary['method'] == 'Noisy'
    toy = summary['datasets']['Toy']
    assert toy['num_images'] == 3
    assert toy['metrics']['psnr'] == pytest.approx(np.mean([float(r['psnr']) for r in rows]),
                                                   abs=1e-5)
    table = open(os.path.join(out, 'Noisy', 'table.md')).read()
    assert table.splitlines()[0] == '| Datasets | Methods | Images | PSNR↑ | SSIM↑ |'
    assert (f'| Toy | Noisy | 3 | {toy["metrics"]["psnr"]:.2f} | {toy["metrics"]["ssim"]:.4f} |'
            in table)


def test_markdown_merge_layout_arrows_and_bold(tmp_path):
    a = make_summary('OSEDiff', {'RealSR': {'num_images': 100, 'metrics': {
        'psnr': 25.1511, 'lpips': 0.2921, 'niqe': 5.6476, 'fid': 123.49}},
        'DRealSR': {'num_images': 93, 'metrics': {'psnr': 27.92, 'lpips': 0.2968}}})
    b = make_summary('ICM-SR', {'RealSR': {'num_images': 100, 'metrics': {
        'psnr': 24.80, 'lpips': 0.2700, 'niqe': 5.8, 'fid': 118.2}}})
    paths = []
    for s in (a, b):
        paths.append(str(tmp_path / f'{s["method"]}.json'))
        write_json(paths[-1], s)
    table_path = str(tmp_path / 'table.md')
    assert eval_folder.main(['--merge', *paths, '--table-out', table_path]) == 0
    lines = open(table_path).read().splitlines()
    # the paper's column order with arrows: LPIPS FID NIQE ... PSNR
    assert lines[0] == '| Datasets | Methods | Images | LPIPS↓ | FID↓ | NIQE↓ | PSNR↑ |'
    assert lines[2] == '| RealSR | OSEDiff | 100 | 0.2921 | 123.49 | **5.6476** | **25.15** |'
    assert lines[3] == '|  | ICM-SR | 100 | **0.2700** | **118.20** | 5.8000 | 24.80 |'
    # one method on DRealSR: nothing to compare, nothing bold; missing cells are '-'
    assert lines[4] == '| DRealSR | OSEDiff | 93 | 0.2968 | - | - | 27.92 |'
    assert markdown_table([a, b]) == '\n'.join(lines) + '\n'


def test_merge_rejects_non_summary(tmp_path):
    bad = tmp_path / 'x.json'
    bad.write_text('{"PSNR": 1}')
    with pytest.raises(ValueError, match='not an icmsr summary'):
        eval_folder.main(['--merge', str(bad)])
