"""eval_folder: one reader for every file, bad files named and counted, honest tables."""
import json
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from icmsr.evaluation.reports import make_summary, markdown_table

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, os.path.join(REPO, 'tools'))
import eval_folder  # noqa: E402


def _rgb(seed, h=24, w=32):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _run(tmp_path, pred, gt, *extra):
    out = str(tmp_path / 'reports')
    code = eval_folder.main(['--pred', str(pred), '--gt', str(gt), '--metrics', 'psnr',
                             '--out', out, '--name', 'M', '--datasets', 'Toy', '--no-progress',
                             '--device', 'cpu', *extra])
    summary = json.load(open(os.path.join(out, 'M', 'summary.json')))
    rows = open(os.path.join(out, 'M', 'Toy', 'per_image.csv')).read().splitlines()[1:]
    return code, summary['datasets']['Toy'], {r.split(',')[0]: float(r.split(',')[1]) for r in rows}


def test_16bit_gray_gt_and_identical_prediction_score_100(tmp_path):
    pred, gt = tmp_path / 'pred', tmp_path / 'gt'
    pred.mkdir()
    gt.mkdir()
    gray16 = (np.random.default_rng(0).integers(0, 256, (24, 32)) * 257).astype(np.uint16)
    assert cv2.imwrite(str(gt / 'g.png'), gray16)
    # The identical image as an 8-bit RGB prediction (what an SR method writes).
    Image.fromarray(np.repeat((gray16 // 257).astype(np.uint8)[..., None], 3, 2)).save(
        pred / 'g.png')
    code, entry, per_image = _run(tmp_path, pred, gt)
    # pyiqa's PSNR of identical images is 10*log10(1 / (0 + 1e-8)) = 80 dB; Pillow's
    # 8-bit view of the 16-bit file used to give ~6.9 dB here.
    assert code == 0 and entry['num_images'] == 1
    assert per_image['g'] == pytest.approx(10 * np.log10(1 / 1e-8), abs=1e-3)


def test_exif_rotated_gt_scores_against_upright_prediction(tmp_path):
    pred, gt = tmp_path / 'pred', tmp_path / 'gt'
    pred.mkdir()
    gt.mkdir()
    upright = _rgb(1, 24, 32)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # the camera stored it rotated
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 270 (i.e. 90 clockwise) to display upright
    Image.fromarray(stored).save(gt / 'e.png', exif=exif.tobytes())
    Image.fromarray(upright).save(pred / 'e.png')
    code, entry, per_image = _run(tmp_path, pred, gt)
    assert code == 0 and per_image['e'] == pytest.approx(80.0, abs=1e-3)  # identical once upright


def _folders(tmp_path):
    pred, gt = tmp_path / 'pred', tmp_path / 'gt'
    pred.mkdir()
    gt.mkdir()
    return pred, gt


def test_corrupt_file_named_counted_run_continues_exit_1(tmp_path, capsys):
    pred, gt = _folders(tmp_path)
    for i, k in enumerate('abc'):
        Image.fromarray(_rgb(i)).save(gt / f'{k}.png')
        Image.fromarray(_rgb(i)).save(pred / f'{k}.png')
    data = (pred / 'b.png').read_bytes()
    (pred / 'b.png').write_bytes(data[:len(data) // 2])  # truncated, as by a killed writer
    Image.fromarray(_rgb(9, 20, 20)).save(pred / 'c.png')  # wrong size
    code, entry, per_image = _run(tmp_path, pred, gt)
    err = capsys.readouterr().err
    assert code == 1
    assert str(pred / 'b.png') in err and 'size mismatch' in err and str(pred / 'c.png') in err
    assert '2 of 3 image(s) failed' in err
    assert sorted(per_image) == ['a'] and entry['num_images'] == 1
    assert entry['num_expected'] == 3 and entry['num_errors'] == 2


def test_strict_requires_a_prediction_per_gt(tmp_path, capsys):
    pred, gt = _folders(tmp_path)
    for i, k in enumerate('ab'):
        Image.fromarray(_rgb(i)).save(gt / f'{k}.png')
    Image.fromarray(_rgb(0)).save(pred / 'a.png')
    out = str(tmp_path / 'r')
    args = ['--pred', str(pred), '--gt', str(gt), '--metrics', 'psnr', '--out', out,
            '--no-progress', '--device', 'cpu']
    assert eval_folder.main(args) == 0
    assert eval_folder.main(args + ['--strict']) == 1
    err = capsys.readouterr().err
    assert "1 GT image(s)" in err and "have no prediction" in err and "['b']" in err


def test_incomplete_row_shows_count_and_is_never_bold():
    full = make_summary('OSEDiff', {'RealSR': {'num_images': 100, 'metrics': {'psnr': 25.15}}})
    ours = make_summary('Ours', {'RealSR': {'num_images': 100, 'metrics': {'psnr': 24.00}}})
    partial = make_summary('Partial', {'RealSR': {'num_images': 9, 'num_expected': 100,
                                                  'metrics': {'psnr': 30.00}}})
    lines = markdown_table([full, ours, partial]).splitlines()
    assert lines[2] == '| RealSR | OSEDiff | 100 | **25.15** |'
    assert lines[3] == '|  | Ours | 100 | 24.00 |'
    assert lines[4] == '|  | Partial | 9 of 100 | 30.00 |'
    # Only one complete row left: no comparison, nothing bold (the 9-image row still isn't).
    lines = markdown_table([full, partial]).splitlines()
    assert '**' not in ''.join(lines)


def test_missing_weights_without_folder_fail_before_scoring_fid_included(tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_torch_home'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')  # declared offline: no probe, no retry
    monkeypatch.delenv('ICMSR_METRIC_WEIGHTS', raising=False)
    pred, gt = tmp_path / 'pred', tmp_path / 'gt'
    pred.mkdir()
    gt.mkdir()
    Image.fromarray(_rgb(0)).save(gt / 'a.png')
    Image.fromarray(_rgb(0)).save(pred / 'a.png')
    out = tmp_path / 'reports'
    code = eval_folder.run_tool(eval_folder.main, [
        '--pred', str(pred), '--gt', str(gt), '--metrics', 'psnr', 'fid', '--out', str(out),
        '--no-progress', '--device', 'cpu'])
    err = capsys.readouterr().err
    assert code == 2
    assert '1 metric weight file(s) missing in ' + str(tmp_path / 'empty_torch_home') in err
    assert 'pt_inception-2015-12-05-6726825d.pth' in err and 'from https://' in err
    assert 'tools/download_metric_weights.py' in err
    assert not out.exists()  # nothing was scored or written


def test_iqa_metrics_without_folder_fails_before_the_first_batch(tmp_path, monkeypatch):
    from icmsr.evaluation import IQAMetrics, MetricWeightsError
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.delenv('ICMSR_METRIC_WEIGHTS', raising=False)
    metric = IQAMetrics(metric_names=['psnr', 'lpips', 'fid'], prefix='X')
    with pytest.raises(MetricWeightsError, match='(?s)3 metric weight file.*LPIPS_v0.1_alex'
                                                 '.*pt_inception'):
        metric.check_weights()  # what the test loops call before inferring anything
    with pytest.raises(MetricWeightsError, match='(?s)LPIPS_v0.1_alex'):
        metric.process(None, [dict(pred_img=torch.rand(3, 8, 8), gt_img=torch.rand(3, 8, 8),
                                   key='a')])  # a plain TestLoop: the first batch says it
    IQAMetrics(metric_names=['psnr', 'ssim', 'niqe'], prefix='X').check_weights()  # no files
