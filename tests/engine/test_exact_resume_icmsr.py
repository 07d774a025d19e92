"""Kill-and-resume of the real (tiny) ICM-SR training equals the uninterrupted run, bitwise.

Unlike the toy test this exercises the model's own random sources: the
degradation's lazily created generator, the VAE posterior sample, the
regulariser's and the auxiliary model's timestep/noise draws and the
dataset's crops and flips (NumPy).
"""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from engine_toy import CrashAfter, SimulatedCrash

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))



@pytest.fixture(scope='module')
def tiny_root(tmp_path_factory):
    from demo_data import make_synthetic_paired_set, skimage_training_images
    root = tmp_path_factory.mktemp('tiny')
    skimage_training_images(str(root / 'train'), size=96, names=['astronaut', 'coffee', 'rocket'])
    make_synthetic_paired_set(str(root / 'test'), num_images=1, gt_size=64, scale=4)
    return root


def _train(tiny_root, work_dir, name, crash_after=None, resume=False):
    os.environ['ICMSR_TINY_DATA'] = str(tiny_root)
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'icmsr_tiny.py'))
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = name
    cfg.log_level = 'WARNING'
    cfg.train_cfg.max_iters = 4
    cfg.train_cfg.val_interval = 1000
    cfg.param_scheduler[0].end = cfg.param_scheduler[0].T_max = 4
    cfg.default_hooks.checkpoint.interval = 2
    cfg.default_hooks.visualization.interval = 3  # a grid between checkpoint and crash
    cfg.train_dataloader.dataset.times = 1  # 3 images, batch 2: epoch ends inside the run
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    if crash_after:
        runner.register_hook(CrashAfter(crash_after), priority='LOWEST')
    try:
        runner.train()
    except SimulatedCrash:
        return None
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def test_tiny_icmsr_resume_is_bitwise(tiny_root, tmp_path):
    torch.set_num_threads(1)
    full = _train(tiny_root, tmp_path / 'full', 'resume_full')
    assert _train(tiny_root, tmp_path / 'killed', 'resume_killed', crash_after=3) is None
    resumed = _train(tiny_root, tmp_path / 'killed', 'resume_again', resume=True)
    assert set(full) == set(resumed) and full
    different = [k for k in full if not torch.equal(full[k], resumed[k])]
    assert not different, different[:5]
