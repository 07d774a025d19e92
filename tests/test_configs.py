"""Every config in configs/ loads, builds its model (tiny stand-ins for SD) and its dataloaders.

Real weights are never loaded: the SD v1-4 / T2I-Adapter parts of each config are
swapped for the tiny random architectures of ``configs/icmsr_tiny.py`` (the
adapters by which TencentARC checkpoint they name), everything else - conditions,
adapter scale, auxiliary-model settings, losses, data pipelines, loops - is the
config's own.
"""
import copy
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.runner import Runner

from icmsr.registry import MODELS
from icmsr.utils.setup_env import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(osp.basename(p) for p in glob.glob(osp.join(ROOT, 'configs', '*.py')))
# Inference-only configs of released models (tested with their converters).
RELEASED_MODEL_CONFIGS = {'osediff_sd21.py'}
TINY_CONFIGS = {'icmsr_tiny.py', 'icmsr_tiny_base.py'}
PAPER_CONFIGS = [c for c in CONFIGS if c not in TINY_CONFIGS and c not in RELEASED_MODEL_CONFIGS]

# What each paper row must be (Tables 1, 2, 4, 5): condition mode, adapters, scale,
# auxiliary model with adapter.
EXPECTED = {
    'icmsr_multi.py': ('multi', 2, 1.0, False),
    'icmsr_color.py': ('colormap', 1, 1.0, False),
    'icmsr_canny.py': ('canny', 1, 1.0, False),
    'icmsr_lq.py': ('lq', 1, 1.0, False),
    'osediff.py': (None, 0, 0.0, False),
    'icmsr_multi_scale0.5.py': ('multi', 2, 0.5, False),
    'icmsr_multi_aux-adapter.py': ('multi', 2, 1.0, True),
    'tsdsr.py': (None, 0, 0.0, False),
    'icmsr_multi_tsd.py': ('multi', 2, 1.0, False),
    'icmsr_multi_24gb.py': ('multi', 2, 1.0, False),
}


@pytest.fixture(scope='module', autouse=True)
def _one_thread():
    # Tiny convolutions: one thread is as fast and immune to busy cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    register_all_modules()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
    """A fake data tree: DIV2K/LSDIR HQ folders and one StableSR-layout test set."""
    from demo_data import make_synthetic_paired_set, skimage_training_images
    root = tmp_path_factory.mktemp('data')
    skimage_training_images(str(root / 'DIV2K' / 'DIV2K_train_HR'), size=96,
                            names=['astronaut', 'coffee'])
    skimage_training_images(str(root / 'LSDIR' / 'HR' / 'train' / '0001000'), size=80,
                            names=['chelsea'])
    make_synthetic_paired_set(str(root / 'test'), num_images=2, gt_size=64, scale=4)
    skimage_training_images(str(root / 'tiny' / 'train'), size=96, names=['rocket'])
    make_synthetic_paired_set(str(root / 'tiny' / 'test'), num_images=2, gt_size=64, scale=4)
    return root


def _in_process(loader_cfg):
    """A dataloader config without worker processes (they only cost start-up time here)."""
    loader_cfg = copy.deepcopy(loader_cfg)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    return loader_cfg


def _load(name, data_dirs, monkeypatch):
    """Load a config with every data path pointed at the fake tree."""
    monkeypatch.setenv('ICMSR_DATA_ROOT', str(data_dirs))
    for var in ('ICMSR_DIV2K_VAL', 'ICMSR_REALSR', 'ICMSR_DREALSR'):
        monkeypatch.setenv(var, str(data_dirs / 'test'))
    monkeypatch.setenv('ICMSR_TINY_DATA', str(data_dirs / 'tiny'))
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def _tiny_model_cfg(cfg, tiny):
    """Swap the pretrained SD and adapter parts of ``cfg.model`` for the tiny ones."""
    model = copy.deepcopy(cfg.model.to_dict())
    # 'text': the tiny run's explicit empty prompts instead of the RAM/DAPE taggers.
    for key in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler', 'lpips', 'text'):
        model[key] = copy.deepcopy(tiny.model[key].to_dict())
    by_id = {cfg.adapter_color.from_pretrained: tiny.tiny_adapter_color,
             cfg.adapter_canny.from_pretrained: tiny.tiny_adapter_canny}
    if model.get('condition') is not None:
        model['condition']['adapters'] = [
            dict(type='SDT2IAdapter', from_config=copy.deepcopy(dict(by_id[a['from_pretrained']])))
            for a in model['condition']['adapters']]
    model['degradation']['kernel_sizes'] = (7, 9, 11)
    return model


def _hq_batch(size=64, batch=1):
    from icmsr.structures import SRDataSample
    torch.manual_seed(0)
    gt = [(torch.rand(3, size, size) * 255).to(torch.uint8) for _ in range(batch)]
    return dict(inputs=dict(gt=gt),
                data_samples=[SRDataSample(metainfo=dict(key=f'k{i}', prompt=''))
                              for i in range(batch)])


def test_all_configs_present():
    assert set(EXPECTED) | TINY_CONFIGS | RELEASED_MODEL_CONFIGS == set(CONFIGS)


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_paper_config_builds_and_trains_one_step(name, data_dirs, monkeypatch):
    cfg = _load(name, data_dirs, monkeypatch)
    tiny = _load('icmsr_tiny.py', data_dirs, monkeypatch)
    # What the paper fixes for every row.
    assert cfg.train_cfg.max_iters == 100000 and cfg.train_cfg.type == 'ExactResumeIterBasedTrainLoop'
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.model.generator.lora_rank == cfg.model.aux_diffusion.lora_rank == 4
    for part in ('generator', 'aux_diffusion'):
        opt = cfg.optim_wrapper[part].optimizer
        # AdamW8bit: the same AdamW with 8-bit moments (icmsr_multi_24gb.py).
        assert opt.type in ('AdamW', 'AdamW8bit') and opt.lr == 5e-5
    assert cfg.param_scheduler[0].type == 'CosineAnnealingLR'
    assert cfg.param_scheduler[0].end == 100000
    assert cfg.train_pipeline[1].crop_size == 512
    assert [e.prefix for e in cfg.test_evaluator] == ['DIV2K-Val', 'RealSR', 'DRealSR']
    assert cfg.model_wrapper_cfg.type == 'MMSeparateDistributedDataParallel'

    mode, n_adapters, scale, aux_adapter = EXPECTED[name]
    model = MODELS.build(_tiny_model_cfg(cfg, tiny))
    cond = model.condition
    assert (cond.kind if cond is not None else None) == mode
    assert (cond.extractor.mode if cond is not None else None) == mode
    adapter = None if cond is None else cond.adapter
    assert (0 if adapter is None else len(getattr(adapter, 'adapters', [adapter]))) == n_adapters
    assert (0.0 if cond is None else cond.scale) == scale
    assert model.aux_diffusion.use_adapter is aux_adapter

    # One real training step through the config's optim wrappers.
    optim = _build_optim(model, cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    log = model.train_step(_hq_batch(), optim)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in log.values())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith('generator.') for k in changed)
    assert any(k.startswith('aux_diffusion.') for k in changed)


def _build_optim(model, cfg):
    from mmengine.optim import build_optim_wrapper
    return build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))


@pytest.mark.parametrize('name', ['icmsr_multi.py', 'icmsr_tiny.py'])
def test_dataloaders_and_evaluators_build(name, data_dirs, monkeypatch):
    cfg = _load(name, data_dirs, monkeypatch)
    train = Runner.build_dataloader(_in_process(cfg.train_dataloader), seed=0)
    batch = next(iter(train))
    crop = cfg.train_dataloader.dataset.get('dataset', cfg.train_dataloader.dataset) \
        .pipeline[1].crop_size
    assert batch['inputs']['gt'][0].shape == (3, crop, crop)
    assert batch['inputs']['gt'][0].dtype == torch.uint8
    for loaders, evaluators in ((cfg.test_dataloader, cfg.test_evaluator),
                                (cfg.val_dataloader, cfg.val_evaluator)):
        assert len(loaders) == len(evaluators)
        for loader_cfg, ev_cfg in zip(loaders, evaluators):
            loader = Runner.build_dataloader(_in_process(loader_cfg), seed=0)
            item = next(iter(loader))
            lq, gt = item['inputs']['lq'][0], item['inputs']['gt'][0]
            assert gt.shape[-1] == 4 * lq.shape[-1]
            # As Runner.build_evaluator does with a metric dict.
            Evaluator(copy.deepcopy(ev_cfg))


def test_tiny_config_keeps_the_paper_model_settings(data_dirs, monkeypatch):
    """configs/icmsr_tiny.py differs from the paper's model in its architectures only."""
    tiny = _load('icmsr_tiny.py', data_dirs, monkeypatch)
    assert tiny.model.base_seed == 0  # the random base is reproducible from the config
    paper = _load('icmsr_multi.py', data_dirs, monkeypatch)
    for key in ('generator', 'regularizer', 'aux_diffusion', 'loss_weights', 'test_cfg'):
        assert tiny.model[key] == paper.model[key], key
    assert tiny.model.condition.kind == paper.model.condition.kind
    assert tiny.model.condition.weights == paper.model.condition.weights
    # Prompts: the paper's taggers need weights; the tiny run says 'empty' explicitly.
    assert tiny.model.text == dict(source='empty')


def test_ablations_are_the_minimal_difference(data_dirs, monkeypatch):
    """Each paper row changes only the model entries its table varies."""
    base = _load('icmsr_multi.py', data_dirs, monkeypatch).model.to_dict()
    varies = {'icmsr_color.py': {'condition'}, 'icmsr_canny.py': {'condition'},
              'icmsr_lq.py': {'condition'}, 'osediff.py': {'condition', 'aux_diffusion'},
              'icmsr_multi_scale0.5.py': {'condition'},
              'icmsr_multi_aux-adapter.py': {'aux_diffusion'}}
    for name, keys in varies.items():
        model = _load(name, data_dirs, monkeypatch).model.to_dict()
        assert {k for k in base if model.get(k) != base[k]} == keys, name


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_paper_configs_prompt_with_ram_and_dape_and_stop_without_weights(name, data_dirs,
                                                                          monkeypatch):
    cfg = _load(name, data_dirs, monkeypatch)
    tiny = _load('icmsr_tiny.py', data_dirs, monkeypatch)
    text = cfg.model.text
    assert (text.source, text.image, text.test_image) == ('extractor', 'gt', 'lq')
    assert (text.extractor.variant, text.test_extractor.variant) == ('ram', 'dape')
    # The OSEDiff† baseline and TSD-SR† on it: the fake score OSEDiff's code effectively trains.
    expected = 'osediff_effective' if name in ('osediff.py', 'tsdsr.py') else 'osediff'
    assert cfg.model.aux_diffusion.lora_preset == expected
    model_cfg = _tiny_model_cfg(cfg, tiny)
    model_cfg['text'] = cfg.model.text.to_dict()
    for var in ('ICMSR_RAM', 'ICMSR_DAPE'):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FileNotFoundError, match=r'ICMSR_RAM=.*ram_swin_large_14m'):
        MODELS.build(model_cfg)
