"""Config values, component arguments and data folders are checked before anything is built."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from icmsr.engine.config_checks import (check_config_values, check_data_roots,
                                        check_option_keys_accepted)
from icmsr.user_errors import ConfigError, MissingInputError
from tool_loading import ROOT

CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_every_shipped_config_passes_the_value_checks(path):
    check_config_values(Config.fromfile(path))


def test_values_are_checked_by_key_name_anywhere():
    cfg = dict(train_cfg=dict(max_iters=10, val_interval=None),  # None: the default
               test_dataloader=[dict(batch_size=1), dict(batch_size=True)],
               model=dict(loss_weights=dict(l2=1, lpips='2'), test_cfg=dict(tile_overlap=-8)),
               param_scheduler=[dict(begin=0, end=2.5)],
               custom_hooks=[dict(type='X', end='never')],  # `end` outside schedulers: free
               train_pipeline=[dict(crop_size=(64, 48)), dict(crop_size=[64, 'x'])])
    with pytest.raises(ConfigError) as err:
        check_config_values(cfg)
    assert str(err.value) == (
        'test_dataloader.1.batch_size=True must be an integer; '
        "model.loss_weights.lpips='2' must be a number; "
        'model.test_cfg.tile_overlap=-8 must be at least 0; '
        'param_scheduler.0.end=2.5 must be an integer; '
        "train_pipeline.1.crop_size=[64, 'x'] must be an integer or a list of integers of "
        'at least 1 (fix the config file or the --cfg-options value)')


def test_option_keys_are_checked_only_where_a_constructor_says_so():
    cfg = Config(dict(model=dict(type='ICMSR', regularizer=dict(type='VSDRegularizer',
                                                                cfg_scale=7.5)),
                      other=dict(a=1)))
    check_option_keys_accepted(cfg, {'model.regularizer.cfg_scale': 2,  # exists
                                     'model.regularizer.seed': 3,  # a real argument
                                     'model.anything': 1,  # ICMSR takes **kwargs
                                     'other.b': 2,  # no `type`: nothing to ask
                                     'nowhere.x': 1})  # a new branch: warned elsewhere
    with pytest.raises(ConfigError, match="VSDRegularizer .* takes no argument 'cfg_scael'; "
                                          "did you mean 'cfg_scale'"):
        check_option_keys_accepted(cfg, {'model.regularizer.cfg_scael': 2})


def test_data_roots_inside_dataset_wrappers(tmp_path):
    (tmp_path / 'hr').mkdir()
    cfg = dict(
        train_dataloader=dict(dataset=dict(type='ConcatDataset', datasets=[
            dict(type='HQImageDataset', data_root=str(tmp_path), folders=['hr', 'lsdir']),
            dict(type='RepeatDataset', dataset=dict(data_root='s3://bucket/x'))])),
        test_dataloader=[dict(dataset=dict(type='PairedImageDataset', data_root=str(tmp_path),
                                           lq_dir='hr', gt_dir=str(tmp_path / 'gt')))])
    with pytest.raises(MissingInputError) as err:
        check_data_roots(cfg, ['train_dataloader', 'test_dataloader'])
    message = str(err.value)
    assert (f"train_dataloader.dataset.datasets.0.folders.1: folder "
            f"'{tmp_path / 'lsdir'}' does not exist") in message
    assert f"test_dataloader.0.dataset.gt_dir: folder '{tmp_path / 'gt'}' does not exist" in message
    assert 's3://' not in message and 'folders.0' not in message
    (tmp_path / 'lsdir').mkdir()
    (tmp_path / 'gt').mkdir()
    check_data_roots(cfg, ['train_dataloader', 'test_dataloader'])
    check_data_roots(cfg, ['val_dataloader'])  # absent: nothing to check
