"""RAMTagger against the real Recognize Anything code, when a real ``ram`` is importable.

Skipped (with the reason) unless the ``ram`` on the path is the real code: the
Recognize Anything source (github xinyu1205/recognize-anything) or OSEDiff's copy
(github cswry/OSEDiff, which adds ``ram.models.ram_lora`` for DAPE), plus the
``prompts`` extra. Run, from the repository root::

    PYTHONPATH=$PWD:/path/to/OSEDiff python -m pytest -q tests/test_ram_real.py
    PYTHONPATH=$PWD:/path/to/recognize-anything python -m pytest -q tests/test_ram_real.py

The weights are random, saved in the layouts the real loaders read: ``{'model':
state_dict}`` for RAM, a flat state dict for DAPE. The backbone is ``swin_b`` at
384 px (the smallest configuration both copies' loaders accept; the released
checkpoints are ``swin_l`` at 384 px, ``ICMSR_TEST_RAM_VIT=swin_l`` builds that).
The BERT tokenizer is a stand-in vocabulary of bert-base-uncased's size and
special-token ids (``tests/bert_tokenizer.py``; no hub here).

The reference is each copy's own entry point - ``ram.inference_ram`` on OSEDiff's
``ram_transforms`` of one image, the model built by the copy's ``ram(pretrained=...,
pretrained_condition=...)`` - which needs the same compatibility shims to import
under this transformers; the tagger's preprocessing, weight loading, batching and
tag joining are what is compared.
"""
import importlib
import importlib.util
import os
import sys

import pytest
import torch

from icmsr import compat
from icmsr.models.prompt_extractors import RAMTagger
from icmsr.models.prompt_extractors.ram_tagger import PROMPT_DEPENDENCIES, ram_package_dirs
from bert_tokenizer import save_bert_tokenizer

VIT = os.environ.get('ICMSR_TEST_RAM_VIT', 'swin_b')
SIZE = 384


def _why_not_real():
    dirs = ram_package_dirs()
    if not dirs:
        return ('no ram package on the path: put a clone of xinyu1205/recognize-anything or '
                'cswry/OSEDiff on PYTHONPATH')
    if not os.path.isfile(os.path.join(dirs[0], 'models', 'bert.py')):
        return f'the ram package at {dirs[0]} is not the Recognize Anything code'
    missing = [m for m in PROMPT_DEPENDENCIES if importlib.util.find_spec(m) is None]
    if missing:
        return f"missing {missing}: pip install -e '.[prompts]'"
    return None


pytestmark = pytest.mark.skipif(_why_not_real() is not None, reason=str(_why_not_real()))
HAS_LORA = bool(ram_package_dirs()) and os.path.isfile(
    os.path.join(ram_package_dirs()[0], 'models', 'ram_lora.py'))


def _images():
    """Two smooth random images of different sizes, as one batch of 2 (same size)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 60, 80, generator=g)
    return torch.nn.functional.interpolate(x, size=(300, 400), mode='bicubic').clamp(0, 1)


def _osediff_ram_transforms(lq):
    """OSEDiff's ``ram_transforms`` (test_osediff.py) with its torchvision 0.15 tensor resize."""
    import torchvision.transforms as T
    return T.Compose([T.Resize((SIZE, SIZE), antialias=False),
                      T.Normalize(mean=[0.485, 0.456, 0.406],
                                  std=[0.229, 0.224, 0.225])])(lq)


def _reference_tags(model, images):
    """One ', '-joined string per image through the copy's ``inference_ram``."""
    from ram import inference_ram
    model.eval()
    out = []
    for image in images:
        with torch.no_grad():
            result = inference_ram(_osediff_ram_transforms(image[None]), model)
        # Upstream returns (tags of image 0, Chinese tags), joined with ' | '; OSEDiff's copy
        # the list of tags of the batch, joined with ', ' (test_osediff.py takes [0]).
        out.append(result[0].replace(' | ', ', '))
    return out


def _build(factory, tokenizer, **kwargs):
    with compat.ram_tokenizer_from(tokenizer):
        return factory(image_size=SIZE, vit=VIT, **kwargs)


@pytest.fixture(scope='module')
def real_files(tmp_path_factory):
    """Random weights in the real layouts, and the tokenizer folder."""
    root = tmp_path_factory.mktemp('real_ram')
    tokenizer = save_bert_tokenizer(str(root / 'bert'))
    compat.provide_ram_transformers_names()
    module = importlib.import_module('ram.models.ram_lora' if HAS_LORA else 'ram.models')
    for name in ('ram.models.bert', 'ram.models.bert_lora'):
        if name in sys.modules:
            compat.adapt_ram_bert_module(sys.modules[name])
    torch.manual_seed(0)
    state = _build(module.ram, tokenizer).state_dict()
    g = torch.Generator().manual_seed(1)
    state['label_embed'] = torch.randn(state['label_embed'].shape, generator=g)  # zeros at init
    ram_path = root / f'ram_{VIT}_{SIZE}.pth'
    torch.save({'model': {k: v for k, v in state.items() if 'lora_' not in k}}, ram_path)
    dape_path = None
    if HAS_LORA:
        # DAPE.pth: a flat state dict; LoRA's B matrices start at zero, so draw them too.
        lora = {k: 0.05 * torch.randn(v.shape, generator=g) for k, v in state.items()
                if 'lora_' in k}
        assert lora, 'OSEDiff copy without LoRA parameters'
        dape_path = root / 'DAPE.pth'
        torch.save(lora, dape_path)
    del state
    return dict(tokenizer=tokenizer, ram=str(ram_path), dape=dape_path and str(dape_path))


def test_real_ram_tags_equal_inference_ram(real_files):
    images = _images()
    tagger = RAMTagger('ram', weights=real_files['ram'], tokenizer=real_files['tokenizer'],
                       vit=VIT, image_size=SIZE)
    prompts = tagger(images)
    assert len(prompts) == 2 and all(isinstance(p, str) for p in prompts)
    del tagger
    import ram.models
    reference = _build(ram.models.ram, real_files['tokenizer'], pretrained=real_files['ram'])
    assert prompts == _reference_tags(reference, images)
    assert any(prompts)  # some tags: the equality is not between two empty results


@pytest.mark.skipif(not HAS_LORA, reason='the ram on the path has no ram/models/ram_lora.py '
                    "(DAPE needs OSEDiff's copy)")
def test_real_dape_tags_equal_osediff_inference(real_files):
    images = _images()
    tagger = RAMTagger('dape', weights=real_files['ram'], condition_weights=real_files['dape'],
                       tokenizer=real_files['tokenizer'], vit=VIT, image_size=SIZE, batch_size=2)
    prompts = tagger(images)
    assert len(prompts) == 2
    del tagger
    from ram.models.ram_lora import ram
    reference = _build(ram, real_files['tokenizer'], pretrained=real_files['ram'],
                       pretrained_condition=real_files['dape'])
    assert prompts == _reference_tags(reference, images)
    # DAPE's weights changed the tags: RAM alone on the same weights tags differently.
    plain = RAMTagger('ram', weights=real_files['ram'], tokenizer=real_files['tokenizer'],
                      vit=VIT, image_size=SIZE)
    assert plain(images) != prompts
