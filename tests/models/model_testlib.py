"""Helpers of the model tests: tiny random SD stacks and batches."""
import warnings

import torch

from icmsr.registry import MODELS
from icmsr.utils.setup_env import register_all_modules
from icmsr.structures import SRDataSample


def build_tiny(adapter='multi', **kwargs):
    """Build a tiny ICMSR with condition ``adapter`` (squeeze LPIPS with a random backbone, seeded)."""
    register_all_modules()
    from tiny_config import tiny_model_cfg
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # random LPIPS backbone, torchvision deprecations
        return MODELS.build(tiny_model_cfg(adapter, **kwargs))


def hq_batch(batch=2, size=64, prompt='a photo'):
    """A collated HQ-only training batch (uint8 GT)."""
    g = torch.Generator().manual_seed(1)
    gts = [torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
           for _ in range(batch)]
    samples = [SRDataSample(metainfo=dict(key=f'img{i}', prompt=prompt)) for i in range(batch)]
    return dict(inputs=dict(gt=gts), data_samples=samples)


def randomize_lora(module, std=0.05, seed=3):
    """Give LoRA 'up' weights non-zero values so roles give different outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith('up.weight'):
                p.copy_(torch.randn(p.shape, generator=g) * std)
