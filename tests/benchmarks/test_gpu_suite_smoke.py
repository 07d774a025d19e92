"""tools/benchmarks/gpu_suite.py in its CPU smoke mode (``--device cpu --size 128 --arch tiny``).

The full smoke run (19 cases, each in its own interpreter) takes minutes on 2
cores; here one training case with every memory saver and one inference case
run for real, and the driver's own promises are checked: one row per planned
case in the JSON file, a timeout or a spent budget becomes a row instead of a
lost run, and the table is printed. No timing is asserted.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SUITE = osp.join(ROOT, 'tools', 'benchmarks', 'gpu_suite.py')
SMOKE = ['--device', 'cpu', '--size', '128', '--arch', 'tiny', '--batches', '1', '1',
         '--train-steps', '1', '--train-warmup', '1', '--runs', '1', '--warmup', '1']


def _suite(tmp_path, *extra):
    out = tmp_path / 'results.json'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, SUITE, *SMOKE, '--out', str(out), *extra], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    return proc, json.loads(out.read_text())


def test_saver_training_and_inference_cases_run(tmp_path):
    proc, report = _suite(tmp_path, '--cases', 'train_bf16_ckpt_8bit_*', 'infer_bf16_fused')
    rows = {r['case']: r for r in report['rows']}
    assert sorted(rows) == ['infer_bf16_fused', 'train_bf16_ckpt_8bit_b1']
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    train = rows['train_bf16_ckpt_8bit_b1']
    assert train['status'] == 'ok', train
    assert train['s_per_iter'] > 0 and train['peak_rss_gib'] > 0 and train['trainable_m'] > 0
    infer = rows['infer_bf16_fused']
    assert infer['status'] == 'ok', infer
    assert infer['out'] == 128 and infer['ms_prompt_cached'] > 0 and infer['ms_text_encoder'] > 0
    assert report['environment']['device'] == 'cpu'
    assert 'train_bf16_ckpt_8bit_b1' in proc.stdout.split('case ', 1)[-1]  # the table


@pytest.fixture(scope='module')
def planned():
    sys.path.insert(0, osp.dirname(SUITE))
    import gpu_suite
    return [c['name'] for c in gpu_suite.plan(gpu_suite.parse_args(SMOKE))]


def test_spent_budget_still_reports_every_case(tmp_path, planned):
    proc, report = _suite(tmp_path, '--budget', '0')
    assert proc.returncode == 1
    assert [r['case'] for r in report['rows']] == planned
    assert {r['status'] for r in report['rows']} == {'skipped'}
    assert 'budget' in report['rows'][0]['error']
    for name in planned:
        assert name in proc.stdout


def test_a_case_past_its_timeout_becomes_a_row(tmp_path):
    proc, report = _suite(tmp_path, '--cases', 'tiled_*', '--case-timeout', '0.5')
    assert proc.returncode == 1
    (row,) = report['rows']
    assert row['case'] == 'tiled_bf16_fused' and row['status'] == 'timeout'
