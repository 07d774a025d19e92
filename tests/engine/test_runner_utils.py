"""Flag handling of tools/train.py and tools/test.py (no Runner needed)."""
import os
import pickle

import pytest
import torch
from mmengine.config import Config

from icmsr.engine import runner_utils
from icmsr.engine.runner_utils import (ConfigKeyWarning, enable_amp, guard_checkpoint_loading,
                                       load_config, set_resume, set_work_dir)
from icmsr.user_errors import ConfigError


def _cfg():
    wrapper = dict(type='NonFiniteGuardOptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    return Config(dict(optim_wrapper=dict(constructor='ICMSROptimWrapperConstructor',
                                          generator=dict(wrapper),
                                          aux_diffusion=dict(wrapper, type='OptimWrapper'))))


def test_enable_amp_switches_every_wrapper(monkeypatch):
    monkeypatch.setattr(runner_utils, 'amp_device_available', lambda: True)
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


def test_torch_force_variable_does_not_bypass_trust_flag(tmp_path, monkeypatch):
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'obj': _Payload()}, path)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    runner = _FakeRunner()
    guard_checkpoint_loading(runner, trust=False)
    with pytest.raises(RuntimeError, match='--trust-checkpoint') as info:
        runner.load_checkpoint(str(path))
    assert '\x1b[' not in str(info.value) and 'weights_only' not in str(info.value)
    assert 'posix.getcwd' in str(info.value)  # torch's one useful line: what was refused
    assert str(path) in str(info.value)
    assert os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] == '1'  # the user's setting is back
    trusted = _FakeRunner()
    guard_checkpoint_loading(trusted, trust=True)
    assert trusted.load_checkpoint(str(path))['obj'] == os.getcwd()


def test_amp_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(runner_utils, 'amp_device_available', lambda: False)
    with pytest.raises(RuntimeError, match='--amp needs a CUDA GPU.*Train without --amp'):
        enable_amp(_cfg())


def _write_cfg(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text(
        "max_iters = 200\n"
        "train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)\n"
        "param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters,\n"
        "                        T_max=max_iters), dict(type='ConstantLR', by_epoch=False, end=50)]\n"
        "optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-4))\n"
        "tiny_unet = dict(channels=8)\n")
    return str(path)


def test_misspelled_cfg_options_path_warns_did_you_mean(tmp_path):
    path = _write_cfg(tmp_path)
    with pytest.warns(ConfigKeyWarning, match="'trian_cfg' does not exist.*did you mean 'train_cfg'"):
        cfg = load_config(path, {'trian_cfg.max_iters': 3})
    assert cfg.train_cfg.max_iters == 200  # the observed failure: 200 iterations would run
    # A component (a dict with a registered `type`) whose constructor cannot take the key:
    # an error naming the option and the closest argument, before anything is built.
    with pytest.raises(ConfigError, match="train_cfg.max_iter=3: IterBasedTrainLoop "
                                          r"\(train_cfg\) takes no argument 'max_iter'; "
                                          "did you mean 'max_iters'"):
        load_config(path, {'train_cfg.max_iter': 3})
    with pytest.raises(ConfigError, match="AdamW .* takes no argument 'lrr'; did you mean 'lr'"):
        load_config(path, {'optim_wrapper.optimizer.lrr': 3})
    # A dict without `type` cannot be checked: the warning stays a warning.
    with pytest.warns(ConfigKeyWarning, match="'chanels' does not exist in tiny_unet"):
        load_config(path, {'tiny_unet.chanels': 3})


def test_misspelled_top_level_key_warns_but_config_variables_do_not(tmp_path, recwarn):
    path = tmp_path / 'typo.py'
    path.write_text("max_iters = 3\ntrian_cfg = dict(max_iters=3)\n")
    with pytest.warns(ConfigKeyWarning, match="'trian_cfg' is not read by the Runner; did you mean "
                                              "'train_cfg'"):
        load_config(str(path))
    load_config(_write_cfg(tmp_path), {'train_cfg.max_iters': 5, 'param_scheduler.1.end': 4})
    assert not [w for w in recwarn if issubclass(w.category, ConfigKeyWarning)]


def test_max_iters_option_moves_schedule_end(tmp_path):
    cfg = load_config(_write_cfg(tmp_path), {'train_cfg.max_iters': 30})
    cosine, constant = cfg.param_scheduler
    assert cfg.train_cfg.max_iters == 30 and cfg.train_cfg.val_interval == 30
    assert cosine.end == 30 and cosine.T_max == 30
    assert constant.end == 50  # not the end of training: left alone
    # Explicit scheduler options win over the rule.
    cfg = load_config(_write_cfg(tmp_path), {'train_cfg.max_iters': 30,
                                             'param_scheduler.0.T_max': 77})
    assert cfg.param_scheduler[0].T_max == 77
