"""configs/icmsr_multi_24gb.py: the paper's model with every memory saver switched on.

Built with the tiny architectures in place of SD v1-4 (as tests/test_configs.py
does) while keeping the config's own switches: frozen parts in bf16, LoRA in
float32, checkpointing on, bf16 autocast wrappers with 8-bit AdamW; one training
step then moves both parts.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from icmsr.registry import MODELS
from icmsr.utils.setup_env import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FROZEN = ('unet', 'vae', 'text_encoder')


@pytest.fixture(scope='module')
def configs():
    register_all_modules()
    return (Config.fromfile(osp.join(ROOT, 'configs', 'icmsr_multi_24gb.py')),
            Config.fromfile(osp.join(ROOT, 'configs', 'icmsr_multi.py')),
            Config.fromfile(osp.join(ROOT, 'configs', 'icmsr_tiny.py')))


def _tiny_with_savers(cfg, tiny):
    """Tiny architectures, the config's dtype/checkpointing switches."""
    model = copy.deepcopy(cfg.model.to_dict())
    for key in FROZEN + ('tokenizer', 'scheduler', 'lpips', 'text'):
        swapped = copy.deepcopy(tiny.model[key].to_dict())
        if 'torch_dtype' in model[key]:
            swapped['torch_dtype'] = model[key]['torch_dtype']
        model[key] = swapped
    adapters = [dict(type='SDT2IAdapter', from_config=dict(tiny.tiny_adapter_color)),
                dict(type='SDT2IAdapter', from_config=dict(tiny.tiny_adapter_canny))]
    model['condition']['adapters'] = adapters
    model['condition']['extractor'] = tiny.model.condition.extractor.to_dict()
    model['degradation']['kernel_sizes'] = (7, 9, 11)
    return model


def test_savers_on_top_of_the_paper_config(configs):
    cfg, paper, _ = configs
    for key in FROZEN:
        assert cfg.model[key].torch_dtype == 'bfloat16'
        assert cfg.model[key].from_pretrained == paper.model[key].from_pretrained
    assert cfg.model.condition.torch_dtype == 'bfloat16'
    assert cfg.model.generator.gradient_checkpointing is True
    for part in ('generator', 'aux_diffusion'):
        wrapper, base = cfg.optim_wrapper[part], paper.optim_wrapper[part]
        assert wrapper.type == 'AutocastNonFiniteGuardOptimWrapper' and wrapper.dtype == 'bfloat16'
        assert wrapper.optimizer.type == 'AdamW8bit'
        # Everything else is the paper's recipe.
        assert {k: v for k, v in wrapper.optimizer.items() if k != 'type'} == \
            {k: v for k, v in base.optimizer.items() if k != 'type'}
        assert wrapper.clip_grad == base.clip_grad
    for key in ('regularizer', 'aux_diffusion', 'loss_weights', 'text'):
        assert cfg.model[key] == paper.model[key], key
    assert cfg.train_dataloader.batch_size == paper.train_dataloader.batch_size == 4


def test_savers_build_and_train_one_step(configs):
    cfg, _, tiny = configs
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = MODELS.build(_tiny_with_savers(cfg, tiny))
        for name in ('unet', 'text'):
            frozen = getattr(model, name)
            assert {p.dtype for p in frozen.parameters() if not p.requires_grad} == {torch.bfloat16}
        assert next(model.generator.vae.parameters()).dtype == torch.bfloat16
        assert next(model.condition.adapter.parameters()).dtype == torch.bfloat16
        for params in model.trainable_groups().values():
            assert {p.dtype for p in params} == {torch.float32}
        assert model.unet.is_gradient_checkpointing
        try:
            optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
        except RuntimeError as err:  # bitsandbytes without a CPU backend
            pytest.skip(str(err))
        assert type(optim['generator'].optimizer).__name__ == 'AdamW8bit'
        before = {k: v.clone() for k, v in model.state_dict().items()}
        from icmsr.structures import SRDataSample
        gt = [(torch.rand(3, 64, 64) * 255).to(torch.uint8)]
        batch = dict(inputs=dict(gt=gt), data_samples=[SRDataSample(metainfo=dict(prompt=''))])
        model.train()
        log = model.train_step(batch, optim)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.isfinite(v) for v in log.values())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith('generator.') for k in changed)
    assert any(k.startswith('aux_diffusion.') for k in changed)
