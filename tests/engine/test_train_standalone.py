"""``tools/train.py configs/icmsr_tiny.py`` needs no earlier step: the demo data is written on demand."""
import importlib
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'icmsr_tiny.py')


def test_tiny_config_data_prepared_on_demand(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('ICMSR_TINY_DATA', str(tmp_path / 'data'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')  # importing the tool may set it; undone after
    train = importlib.import_module('train')  # tools/ is on sys.path (tests/conftest.py)
    from icmsr.engine.runner_utils import load_config
    from icmsr.registry import DATASETS
    from icmsr.utils.setup_env import register_all_modules
    register_all_modules()
    cfg = load_config(TINY)
    assert cfg.tiny_root == str(tmp_path / 'data')
    train.prepare_tiny_data(cfg)
    assert 'python tools/demo.py --prepare-only' in capsys.readouterr().out
    # The dataset that failed with "Image folder ... does not exist" now builds.
    assert len(DATASETS.build(cfg.train_dataloader.dataset.dataset)) == 8  # inside RepeatDataset
    assert len(DATASETS.build(cfg.test_dataloader[0].dataset)) == 4
    mtime = osp.getmtime(tmp_path / 'data' / 'train' / 'astronaut.png')
    train.prepare_tiny_data(cfg)  # present: left alone
    assert osp.getmtime(tmp_path / 'data' / 'train' / 'astronaut.png') == mtime
