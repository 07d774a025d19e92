"""MMEngine-style helpers: print_config.py, browse_dataset.py, slurm_test.sh."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'icmsr_tiny.py')


def _run(args, **env):
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env))
    return proc.returncode, proc.stdout, proc.stderr


def test_print_config_shows_merged_options_and_warns_on_typos(tmp_path):
    save = str(tmp_path / 'merged.py')
    code, out, err = _run([sys.executable, 'tools/misc/print_config.py', TINY, '--cfg-options',
                           'train_cfg.max_iters=7', 'trian_cfg.max_iters=3', '--save-path', save])
    assert code == 0, err
    assert "did you mean 'train_cfg'" in err
    assert 'max_iters=7' in out and 'T_max=7' in out  # the schedule followed max_iters
    from mmengine.config import Config
    saved = Config.fromfile(save)
    assert saved.train_cfg.max_iters == 7 and saved.param_scheduler[0].end == 7


def test_browse_dataset_saves_labelled_grids_through_pipeline_and_preprocessor(tmp_path):
    from demo_data import skimage_training_images
    skimage_training_images(str(tmp_path / 'data' / 'train'), size=96,
                            names=['astronaut', 'coffee', 'chelsea'])
    out = tmp_path / 'browse'
    code, stdout, err = _run([sys.executable, 'tools/analysis/browse_dataset.py', TINY,
                              '--num', '3', '--per-grid', '2', '--out', str(out)],
                             ICMSR_TINY_DATA=str(tmp_path / 'data'), HF_HUB_OFFLINE='1')
    assert code == 0, err
    assert 'HQ | degraded LQ | colormap | Canny' in stdout
    files = sorted(os.listdir(out))
    assert files == ['samples_0000.png', 'samples_0002.png']
    grid = np.asarray(Image.open(out / files[0]))
    crop = 64  # the tiny config's crop size
    # Two rows of 64-px panels (2-px padding) under the label strip; four columns.
    assert grid.shape[1] == 4 * (crop + 2) + 2
    assert grid.shape[0] > 2 * (crop + 2) + 2
    hq = grid[-(2 * (crop + 2)):-(crop + 4), 2:2 + crop]
    lq = grid[-(2 * (crop + 2)):-(crop + 4), crop + 4:2 * crop + 4]
    assert hq.shape == lq.shape and np.abs(hq.astype(int) - lq.astype(int)).mean() > 1  # degraded


@pytest.mark.parametrize('script, args, expected', [
    ('slurm_test.sh', ['p', 'job', 'cfg.py', 'ck.pth', '--out', 'm.json'],
     'tools/test.py cfg.py ck.pth --out m.json --launcher slurm'),
    ('slurm_train.sh', ['p', 'job', 'cfg.py', 'wd', '--amp'],
     'tools/train.py cfg.py --work-dir wd --amp --launcher slurm'),
    ('slurm_train.sh', ['p', 'job', 'cfg.py'], 'tools/train.py cfg.py --launcher slurm'),
])
def test_slurm_scripts_build_the_srun_line(tmp_path, script, args, expected):
    fake = tmp_path / 'srun'
    fake.write_text('#!/bin/sh\necho srun "$@"\n')
    fake.chmod(0o755)
    code, out, err = _run(['bash', f'tools/{script}'] + args,
                          PATH=f'{tmp_path}:{os.environ["PATH"]}', GPUS='2')
    assert code == 0, err
    assert out.startswith('srun -p p --job-name=job --gres=gpu:2 --ntasks=2 ')
    assert expected in out


def test_slurm_test_usage_error():
    code, _, err = _run(['bash', 'tools/slurm_test.sh', 'p', 'job', 'cfg.py'])
    assert code == 2 and 'CONFIG CHECKPOINT' in err
