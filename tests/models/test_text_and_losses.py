"""Prompt sources, the cached negative prompt, offline LPIPS, MMEngine init."""
import warnings

import pytest
import torch

from icmsr.models.losses import LPIPSLoss, backbone_cache_path
from icmsr.models.text import DEFAULT_NEGATIVE_PROMPT
from icmsr.structures import SRDataSample


def test_prompt_sources(tiny_model):
    text = tiny_model.text
    samples = [SRDataSample(metainfo=dict(prompt='a cat')), SRDataSample(metainfo=dict())]
    assert text.prompts_for(samples, 2) == ['a cat', '']
    text.source, text.fixed_prompt = 'fixed', 'a house'
    assert text.prompts_for(samples, 2) == ['a house', 'a house']
    text.source = 'empty'
    assert text.prompts_for(samples, 2) == ['', '']
    text.source = 'caption'
    emb = text(samples, 2)
    assert emb.shape == (2, 77, 32)
    assert torch.equal(emb[1], text.encode([''])[0])
    assert not torch.equal(emb[0], emb[1])


# Copied from OSEDiff's scripts/train/train_osediff.sh (cswry/OSEDiff @fcc4f09), the
# --neg_prompt of its training command.
OSEDIFF_NEG_PROMPT = "painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, 3D render, unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, signature, jpeg artifacts, deformed, lowres, over-smooth"  # noqa: E501


def test_default_negative_prompt_is_osediffs():
    assert DEFAULT_NEGATIVE_PROMPT == OSEDIFF_NEG_PROMPT


def test_negative_prompt_is_encoded_once_and_not_checkpointed(tiny_model):
    text = tiny_model.text
    assert text.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    assert torch.equal(text.negative(3)[2], text.encode([DEFAULT_NEGATIVE_PROMPT])[0])
    assert 'negative_embeds' not in text.state_dict()
    assert not any(k.startswith('text.') for k in tiny_model.state_dict())


def test_mmengine_init_weights_keeps_every_weight(tiny_model):
    before = {k: v.clone() for k, v in tiny_model._unwrapped_named_tensors().items()}
    tiny_model.init_weights()
    after = tiny_model._unwrapped_named_tensors()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_lpips_reads_backbone_from_torchvision_cache(tmp_path, monkeypatch):
    import torchvision.models as tvm
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    path = backbone_cache_path('squeeze')
    assert path.startswith(str(tmp_path)) and path.endswith('.pth')
    with pytest.warns(UserWarning, match='RANDOM'):
        LPIPSLoss(net='squeeze')
    with pytest.raises(FileNotFoundError, match='squeezenet1_1'):
        LPIPSLoss(net='squeeze', require_backbone=True)
    torch.manual_seed(0)
    ref = tvm.squeezenet1_1(weights=None)
    (tmp_path / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        loss = LPIPSLoss(net='squeeze', require_backbone=True)
    assert loss.backbone_loaded
    first = loss.lpips.net.slice1[0]
    assert torch.equal(first.weight, ref.features[0].weight)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = loss(x, x.flip(-1))
    assert d.shape == (2, ) and torch.all(d > 0)
    assert torch.allclose(loss(x, x), torch.zeros(2), atol=1e-6)
    assert not any(p.requires_grad for p in loss.parameters())
