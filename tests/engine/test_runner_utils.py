"""Flag handling of tools/train.py and tools/test.py (no Runner needed)."""
import os
import pickle

import pytest
import torch
from mmengine.config import Config

from icmsr.engine.runner_utils import (enable_amp, guard_checkpoint_loading, set_resume,
                                       set_work_dir)


def _cfg():
    wrapper = dict(type='NonFiniteGuardOptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    return Config(dict(optim_wrapper=dict(constructor='ICMSROptimWrapperConstructor',
                                          generator=dict(wrapper),
                                          aux_diffusion=dict(wrapper, type='OptimWrapper'))))


def test_enable_amp_switches_every_wrapper():
    cfg = _cfg()
    enable_amp(cfg)
    assert cfg.optim_wrapper.generator.type == 'AmpNonFiniteGuardOptimWrapper'
    assert cfg.optim_wrapper.aux_diffusion.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.generator.loss_scale == 'dynamic'
    cfg.optim_wrapper.generator.type = 'MyWrapper'
    with pytest.raises(ValueError, match='MyWrapper'):
        enable_amp(cfg)


def test_set_resume(tmp_path):
    cfg = Config(dict(resume=False, load_from=None))
    set_resume(cfg, None)
    assert cfg.resume is False
    set_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    ckpt = tmp_path / 'iter_10.pth'
    torch.save({'state_dict': {}}, ckpt)
    set_resume(cfg, str(ckpt))
    assert cfg.load_from == str(ckpt)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        set_resume(cfg, str(tmp_path / 'nope.pth'))


def test_set_work_dir():
    cfg = Config(dict())
    set_work_dir(cfg, None, 'configs/icmsr_color.py')
    assert cfg.work_dir == os.path.join('./work_dirs', 'icmsr_color')
    set_work_dir(cfg, '/x', 'configs/icmsr_color.py')
    assert cfg.work_dir == '/x'


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


class _FakeRunner:
    def load_checkpoint(self, filename, map_location='cpu'):
        return torch.load(filename, map_location=map_location)


def test_foreign_checkpoint_needs_trust(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'obj': _Payload()}, path)
    runner = _FakeRunner()
    guard_checkpoint_loading(runner, trust=False)
    with pytest.raises(RuntimeError, match='--trust-checkpoint') as info:
        runner.load_checkpoint(str(path))
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    trusted = _FakeRunner()
    guard_checkpoint_loading(trusted, trust=True)
    assert trusted.load_checkpoint(str(path))['obj'] == os.getcwd()
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
