"""Prompt sources (captions, fixed, empty, extractors), the negative prompt, offline LPIPS, init."""
import warnings

import pytest
import torch

from icmsr.models.losses import LPIPSLoss, backbone_cache_path
from icmsr.models.prompt_extractors import PromptExtractor
from icmsr.models.text import DEFAULT_NEGATIVE_PROMPT
from icmsr.structures import SRDataSample


def test_prompt_sources(tiny_model):
    text = tiny_model.text
    assert text.source == 'empty'  # the tiny config says so explicitly
    samples = [SRDataSample(metainfo=dict(prompt='a cat')), SRDataSample(metainfo=dict())]
    text.source = 'caption'
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
    text.source = 'empty'


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
    before = {k: v.clone() for k, v in tiny_model.named_parameters()}
    before.update({k: v.clone() for k, v in tiny_model.named_buffers()})
    tiny_model.init_weights()
    after = dict(tiny_model.named_parameters())
    after.update(dict(tiny_model.named_buffers()))
    assert before.keys() == after.keys()
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
    with pytest.raises(ValueError, match='backbone_weights'):
        LPIPSLoss(net='squeeze', backbone_weights=str(path))


class _MeanTagger(PromptExtractor):
    """Stand-in extractor: 'bright' or 'dark' by image mean, counts its calls."""

    def __init__(self, word=''):
        super().__init__(batch_size=4)
        self.word, self.seen = word, []

    def load(self, device):
        self.model = 'loaded'

    def extract(self, images):
        self.seen.append(images.clone())
        return [('bright' if x.mean() > 0.5 else 'dark') + self.word for x in images]


def _encoder(tiny_model, **kwargs):
    from icmsr.models.text import PromptEncoder
    return PromptEncoder(tiny_model.text.text_encoder, tiny_model.text.tokenizer, **kwargs)


def test_extractor_source_tags_gt_in_training_and_lq_in_eval(tiny_model):
    train_tagger, test_tagger = _MeanTagger(), _MeanTagger(' photo')
    text = _encoder(tiny_model, source='extractor', extractor=train_tagger, image='gt',
                    test_extractor=test_tagger, test_image='lq')
    gt = torch.stack([torch.full((3, 16, 16), 0.9), torch.full((3, 16, 16), 0.1)])
    lq = 1 - gt[:, :, :4, :4]
    images = dict(gt=gt, lq=lq)
    text.train()
    assert text.prompts_for(None, 2, images) == ['bright', 'dark']
    emb = text(None, 2, images)
    assert torch.equal(emb, text.encode(['bright', 'dark']))
    assert torch.equal(train_tagger.seen[0], gt) and not test_tagger.seen
    text.eval()
    assert text.prompts_for(None, 2, images) == ['dark photo', 'bright photo']
    assert torch.equal(test_tagger.seen[0], lq)
    assert text.prompts_for(None, 2, dict(gt=None, lq=lq)) == ['dark photo', 'bright photo']
    # One extractor for both phases when test_extractor is not given.
    same = _encoder(tiny_model, source='extractor', extractor=train_tagger)
    assert same.test_extractor is same.extractor and same.test_image == 'lq'


def test_extractor_source_errors_say_what_to_pass(tiny_model, monkeypatch):
    text = _encoder(tiny_model, source='extractor', extractor=_MeanTagger())
    text.train()
    with pytest.raises(ValueError, match=r"images=dict\(gt=\.\.\., lq=\.\.\.\).*'gt'"):
        text(None, 2)
    text.eval()
    with pytest.raises(ValueError, match=r"test_image='lq'"):
        text(None, 1, images=dict(gt=torch.rand(1, 3, 8, 8), lq=None))
    with pytest.raises(ValueError, match='batch_size is 2'):
        text(None, 2, images=dict(lq=torch.rand(3, 3, 8, 8)))
    with pytest.raises(ValueError, match="needs extractor="):
        _encoder(tiny_model, source='extractor')
    with pytest.raises(ValueError, match="use source='extractor'"):
        _encoder(tiny_model, source='empty', extractor=_MeanTagger())
    with pytest.raises(ValueError, match='image must be one of'):
        _encoder(tiny_model, source='extractor', extractor=_MeanTagger(), image='hq')
    # The paper's RAM tagger without weights: the build stops and says where they go.
    monkeypatch.delenv('ICMSR_RAM', raising=False)
    with pytest.raises(FileNotFoundError, match='ICMSR_RAM'):
        _encoder(tiny_model, source='extractor', extractor=dict(type='RAMTagger'))
