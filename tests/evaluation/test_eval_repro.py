"""Our metrics are the community's: OSEDiff's published RealSR numbers, reproduced.

Data: ``../shared/data/realsr`` (OSEDiff's ``results_osediff`` vs ``test_HR`` and
its pyiqa log ``osediff_metrics.log``). Skipped when absent.

Runtime on 2 shared cores: PSNR costs ~0.02 s/image, pyiqa's float64 SSIM ~1.5 s
and NIQE ~0.2 s. So the default suite checks the PSNR *average over all 100
images* (4 decimals) and SSIM/NIQE *per image on a 4-image subset* against the
log; the full SSIM and NIQE averages run with ``ICMSR_FULL_REPRO=1`` (about 3-4
minutes) and in ``tools/benchmarks/metrics.py --full``.
"""
import os
import re

import pytest
import torch

from icmsr.evaluation.folder_eval import read_image
from icmsr.evaluation.scorers import build_scorers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared',
                                    'data', 'realsr'))
LOG = os.path.join(ROOT, 'osediff_metrics.log')
pytestmark = pytest.mark.skipif(
    not os.path.isfile(LOG), reason=f'RealSR reproduction data not found at {ROOT}')
FULL = os.environ.get('ICMSR_FULL_REPRO') == '1'
# Subset: first images plus the one with the largest NIQE deviation (Nikon_023).
SUBSET = ['Canon_001_LR4', 'Canon_002_LR4', 'Canon_006_LR4', 'Nikon_023_LR4']


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


def test_psnr_average_over_all_100_images(log, scorers):
    per_image, averages = log
    values = []
    for key in sorted(per_image):
        pred, gt = _pair(key)
        v = scorers['psnr'](pred, gt)[0]
        assert abs(v - per_image[key]['psnr']) < 1e-4, key
        values.append(v)
    assert len(values) == 100
    assert round(sum(values) / len(values), 4) == averages['psnr']


def test_ssim_and_niqe_per_image_subset(log, scorers):
    per_image, _ = log
    for key in SUBSET:
        pred, gt = _pair(key)
        assert scorers['ssim'](pred, gt)[0] == pytest.approx(per_image[key]['ssim'], abs=2e-6)
        # pyiqa's NIQE moved by a few 1e-3 per image since OSEDiff's run (Nikon_023:
        # 0.011); the average stays within 3e-4 (full test below).
        assert scorers['niqe'](pred)[0] == pytest.approx(per_image[key]['niqe'], abs=0.015)


@pytest.mark.skipif(not FULL, reason='full SSIM/NIQE averages take ~3-4 min on 2 cores; '
                    'run with ICMSR_FULL_REPRO=1 (also: tools/benchmarks/metrics.py --full)')
def test_full_ssim_and_niqe_averages(log, scorers):
    per_image, averages = log
    ssim, niqe = [], []
    for key in sorted(per_image):
        pred, gt = _pair(key)
        ssim.append(scorers['ssim'](pred, gt)[0])
        niqe.append(scorers['niqe'](pred)[0])
    assert round(sum(ssim) / 100, 4) == averages['ssim']
    assert abs(sum(niqe) / 100 - averages['niqe']) < 1e-3
