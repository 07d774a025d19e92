"""The demo's report: bicubic folder, score table and comparison picture (``tools/demo.py``)."""
import os.path as osp

import numpy as np
import pytest
import torch

from icmsr.fileio.image_io import load_image_rgb


@pytest.fixture(scope='module')
def pairs(tmp_path_factory):
    from demo_data import make_synthetic_paired_set
    root = tmp_path_factory.mktemp('demo_report')
    return make_synthetic_paired_set(str(root / 'test'), num_images=2, gt_size=64, scale=4, seed=0)


def test_table_scores_bicubic_as_pyiqa_does(pairs, tmp_path):
    import cv2
    import pyiqa
    import demo
    bicubic = demo.write_bicubic(pairs['lq_dir'], pairs['gt_dir'], str(tmp_path / 'bicubic'))
    # PSNR on the Y of YCbCr, as the paper's tables (pyiqa's own default is another Y).
    psnr = pyiqa.create_metric('psnr', test_y_channel=True, color_space='ycbcr', device='cpu')
    expected = []
    for name in pairs['names']:
        gt = load_image_rgb(osp.join(pairs['gt_dir'], name))
        lq = load_image_rgb(osp.join(pairs['lq_dir'], name))
        up = cv2.resize(lq, gt.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        assert np.array_equal(load_image_rgb(osp.join(bicubic, name)), up)
        to_tensor = (lambda a: torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255)
        expected.append(float(psnr(to_tensor(up), to_tensor(gt))))
    lines = demo.score_table({'bicubic': bicubic, 'GT itself': pairs['gt_dir']},
                             pairs['gt_dir'], str(tmp_path / 'scores'))
    assert lines[0].split() == ['PSNR', 'SSIM']
    label, value, ssim = lines[1].rsplit(maxsplit=2)
    assert label == 'bicubic' and float(value) == pytest.approx(np.mean(expected), abs=1e-3)
    assert 0 < float(ssim) < 1
    assert float(lines[2].split()[-1]) == pytest.approx(1.0)  # the GT scored against itself


def test_comparison_has_a_labelled_column_per_row_and_the_gt(pairs, tmp_path):
    import demo
    path = demo.write_comparison({'bicubic': pairs['gt_dir'], 'trained (9 iterations)':
                                  pairs['gt_dir']}, pairs['gt_dir'], str(tmp_path / 'c.png'))
    grid = load_image_rgb(path)
    # Two test images of 64 px, three columns (bicubic, trained, GT), 2 px padding, a label strip.
    assert grid.shape[1] == 3 * 64 + 4 * 2
    assert grid.shape[0] > 2 * 64 + 3 * 2
