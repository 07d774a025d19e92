"""One super-resolution path: tools/test.py (Runner) and tools/infer.py give the same pixels.

The tiny config is built the way users build it (its random base drawn from the
seed the config records), a checkpoint of trained LoRA is written, and the same
LQ images go through ``tools/test.py`` (which saves its SR images) and through
``tools/infer.py``: one image that fits one 128 px tile and one that is tiled.
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from apis_helpers import randomize_lora

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'icmsr_tiny.py')
TILES = ['model.test_cfg.tile_size=128', 'model.test_cfg.tile_overlap=32',
         'model.test_cfg.vae_tile_size=128', 'model.test_cfg.vae_overlap=32']


def _run(args, env):
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _smooth(h, w, seed):
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(2, h // 4), max(2, w // 4), 3), dtype=np.uint8))
    return small.resize((w, h), Image.BICUBIC)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    from mmengine.config import Config
    from icmsr.registry import MODELS
    from icmsr.utils.setup_env import register_all_modules
    root = tmp_path_factory.mktemp('one_path')
    test_dir = root / 'data' / 'test'
    for name, (h, w), seed in (('inside', (32, 32), 0), ('tiled', (48, 40), 1)):
        for sub, scale in (('test_LR', 1), ('test_HR', 4)):
            os.makedirs(test_dir / sub, exist_ok=True)
            _smooth(h * scale, w * scale, seed).save(test_dir / sub / f'{name}.png')
    register_all_modules()
    model = MODELS.build(Config.fromfile(TINY).model)
    randomize_lora(model.generator, seed=5)  # stands for trained LoRA
    ckpt = str(root / 'iter_1.pth')
    torch.save(dict(meta=dict(iter=1), state_dict=model.state_dict()), ckpt)
    env = dict(os.environ, ICMSR_TINY_DATA=str(root / 'data'), OMP_NUM_THREADS='1')
    return root, test_dir, ckpt, env


def _infer_tool():
    spec = importlib.util.spec_from_file_location('infer_tool', osp.join(ROOT, 'tools', 'infer.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_test_py_and_infer_py_give_identical_pixels(setup, monkeypatch, capsys):
    root, test_dir, ckpt, env = setup
    monkeypatch.setenv('ICMSR_TINY_DATA', env['ICMSR_TINY_DATA'])
    infer = _infer_tool()
    work = root / 'test_work'
    code, log = _run(['tools/test.py', TINY, ckpt, '--work-dir', str(work), '--cfg-options',
                      'test_dataloader.0.batch_size=1', *TILES], env)
    assert code == 0, log[-3000:]
    runner_sr = {osp.splitext(f)[0]: np.asarray(Image.open(osp.join(dirpath, f)))
                 for dirpath, _, files in os.walk(work) if osp.basename(dirpath) == 'sr'
                 for f in files}
    assert sorted(runner_sr) == ['inside', 'tiled']
    outs = []
    for run in ('a', 'b'):
        out = root / f'infer_{run}'
        code = infer.main(['--config', TINY, '--weights', ckpt, '--input', str(test_dir / 'test_LR'),
                           '--output', str(out), '--no-fuse', '--device', 'cpu', '--no-progress',
                           '--cfg-options', *TILES])
        log = capsys.readouterr().out
        assert code == 0 and 'model ready' in log and '2 written, 0 failed' in log, log
        outs.append({k: np.asarray(Image.open(out / f'{k}.png')) for k in runner_sr})
    for key in runner_sr:
        assert runner_sr[key].shape == outs[0][key].shape
        assert np.array_equal(outs[0][key], outs[1][key]), f'{key}: two infer.py runs differ'
        assert np.array_equal(runner_sr[key], outs[0][key]), (
            f'{key}: test.py and infer.py differ by up to '
            f'{np.abs(runner_sr[key].astype(int) - outs[0][key]).max()}')
    # Without --weights, infer.py refuses unless told otherwise.
    code = infer.main(['--config', TINY, '--input', str(test_dir / 'test_LR'),
                       '--output', str(root / 'untrained'), '--device', 'cpu'])
    assert code == 2 and '--allow-untrained' in capsys.readouterr().err
    assert not (root / 'untrained').exists()
