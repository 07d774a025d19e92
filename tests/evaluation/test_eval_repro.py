"""Our metrics are the community's: OSEDiff's published RealSR numbers, reproduced.

Data: ``../shared/data/realsr`` (OSEDiff's ``results_osediff`` vs ``test_HR`` and
its pyiqa log ``osediff_metrics.log``). Skipped when absent.

One pass over all 100 images asserts the PSNR and SSIM averages to 4 decimals
and NIQE within 1e-3. CPU time per 512x512 image on one thread: PSNR 0.02 s,
SSIM 0.06 s (separable window, equal to pyiqa's to 1e-10: ``test_fast_ssim.py``;
pyiqa's own takes 1.4 s), NIQE 0.29 s (pyiqa's, on an exact Y channel:
``test_niqe.py``), reading both PNGs ~0.03 s.
"""
import os
import re

import pytest
import torch

from icmsr.evaluation.folder_eval import read_image
from icmsr.evaluation.scorers import build_scorers
from realsr_data import realsr_root

ROOT = realsr_root()
LOG = os.path.join(ROOT, 'osediff_metrics.log')
pytestmark = pytest.mark.skipif(
    not os.path.isfile(LOG), reason=f'RealSR reproduction data not found at {ROOT}')


def _log():
    text = open(LOG).read()
    per_image = {}
    for line in text.splitlines():
        m = re.search(r'results_osediff/(\S+)\.png \| (.*?) \|', line)
        if m:
            per_image[m.group(1)] = {k.lower(): float(v) for k, v in
                                     re.findall(r'(\w+): ([\d.]+)', m.group(2))}
    avg_line = text.split('Average Metrics')[1]
    averages = {k.lower(): float(v) for k, v in re.findall(r'(\w+): ([\d.]+)', avg_line)}
    return per_image, averages


@pytest.fixture(scope='module')
def log():
    return _log()


@pytest.fixture(scope='module')
def scorers():
    torch.set_num_threads(1)  # avoid oversubscribing the shared cores
    return build_scorers(['psnr', 'ssim', 'niqe'], device='cpu')


def _pair(key):
    return (read_image(os.path.join(ROOT, 'results_osediff', key + '.png'))[None],
            read_image(os.path.join(ROOT, 'test_HR', key + '.png'))[None])


def test_log_parsing_sanity(log):
    per_image, averages = log
    assert len(per_image) == 100
    assert averages['psnr'] == 25.1511 and averages['ssim'] == 0.7341
    assert averages['niqe'] == 5.6476


def test_psnr_ssim_niqe_averages_over_all_100_images(log, scorers):
    per_image, averages = log
    values = {'psnr': [], 'ssim': [], 'niqe': []}
    for key in sorted(per_image):
        pred, gt = _pair(key)
        for name in ('psnr', 'ssim'):
            values[name].append(scorers[name](pred, gt)[0])
        values['niqe'].append(scorers['niqe'](pred)[0])
        # The log prints 6 decimals; ours are within 4.3e-6 (PSNR) and 6.8e-7 (SSIM).
        # The margin is for pyiqa's float32 Y of YCbCr, whose exact x.5 ties (0.28 per
        # image on RealSR) each move PSNR by ~2e-6 dB and SSIM by less, depending on
        # the CPU; the rest is float32 summation in pyiqa's PSNR.
        assert abs(values['psnr'][-1] - per_image[key]['psnr']) < 1e-4, key
        assert abs(values['ssim'][-1] - per_image[key]['ssim']) <= 5e-5 + 1e-9, key
        # Our NIQE is exact integer Y + float64, the same on every CPU (AVX2/AVX512,
        # MKL paths, threads: within 1e-11). The log's value is not: its machine
        # rounded each x.5 tie of pyiqa's float32 Y its own way (test_niqe.py).
        # The tie resolutions we can emulate (all down, all up, float32 with and
        # without FMA) move NIQE by up to 0.014 from the exact value on 99 of
        # these images and 0.033 on Canon_001 (722 ties); ours is within 0.0133 of
        # the log on every image (Nikon_023), so 0.015 holds the log's tie draw.
        assert abs(values['niqe'][-1] - per_image[key]['niqe']) < 0.015, key
    assert all(len(v) == 100 for v in values.values())
    assert round(sum(values['psnr']) / 100, 4) == averages['psnr']
    assert round(sum(values['ssim']) / 100, 4) == averages['ssim']
    # The tie resolutions above move the 100-image mean by up to 5e-4 (all up:
    # 5.64801, FMA float32: 5.64738, exact: 5.64748), plus the log's 4 decimals.
    assert abs(sum(values['niqe']) / 100 - averages['niqe']) < 1e-3
