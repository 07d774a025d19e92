"""Prompt extractors (RAMTagger, HFCaptioner) and the online prompt source of PromptEncoder.

RAMTagger is tested against a STAND-IN for the Recognize Anything package (``ram``
is not on PyPI and its weights are 1.5 GB): a tiny module written below that mimics
the package's inference API - ``ram.models.ram`` / ``ram.models.ram_plus``
(``pretrained``, ``image_size``, ``vit``), ``model.generate_tag`` returning
``(tags, tags_chinese)`` joined with ``' | '``, ``ram.inference_ram`` (first image
only), ``ram.get_transform`` (PIL resize, ToTensor, ImageNet normalisation) - and
OSEDiff's copy with ``ram.models.ram_lora.ram(pretrained, pretrained_condition)``
(tags joined with ``', '``). HFCaptioner is tested with a tiny random BLIP saved with
``save_pretrained`` and compared with transformers itself.
"""
import importlib.util
import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import icmsr  # noqa: F401
from icmsr.models.prompt_extractors import (HFCaptioner, PromptExtractor, RAMTagger,
                                            build_prompt_extractor, registered_extractors)
from icmsr.registry import MODELS
from bert_tokenizer import save_bert_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STANDIN_MODEL = '''
import torch, torch.nn as nn
CALLS = []

class StandInRAM(nn.Module):
    """Tags from image statistics: 'bright'/'dark' by mean, 'red' when R > B."""
    def __init__(self, joiner, **kwargs):
        super().__init__()
        from .utils import init_tokenizer
        self.tokenizer = init_tokenizer()  # as both real copies do in their constructors
        self.joiner, self.kwargs, self.inputs = joiner, kwargs, []
        self.weight = nn.Parameter(torch.zeros(1))

    def generate_tag(self, image, threshold=0.68, tag_input=None):
        self.inputs.append(image.detach().clone())
        tags = []
        for x in image.float():
            t = ['bright' if x.mean() > 0 else 'dark']
            if x[0].mean() > x[2].mean():
                t.append('red')
            tags.append(self.joiner.join(t))
        return tags, ['-'] * len(tags)


def load_pretrained(model, path):
    # As the real loaders: torch.load(path, map_location='cpu')['model'], strict=False.
    checkpoint = torch.load(path, map_location='cpu')
    model.load_state_dict(checkpoint['model'], strict=False)
    return model
'''


def _write_standin(root, with_lora=False):
    pkg = root / 'ram'
    (pkg / 'models').mkdir(parents=True)
    (pkg / '__init__.py').write_text(textwrap.dedent('''
        from .inference import inference_ram
        from .transform import get_transform
    '''))
    (pkg / 'inference.py').write_text(textwrap.dedent('''
        import torch
        def inference_ram(image, model):
            with torch.no_grad():
                tags, tags_chinese = model.generate_tag(image)
            return tags[0], tags_chinese[0]
    '''))
    (pkg / 'transform.py').write_text(textwrap.dedent('''
        from torchvision.transforms import Compose, Normalize, Resize, ToTensor
        def get_transform(image_size=384):
            return Compose([lambda im: im.convert('RGB'), Resize((image_size, image_size)),
                            ToTensor(), Normalize(mean=[0.485, 0.456, 0.406],
                                                  std=[0.229, 0.224, 0.225])])
    '''))
    (pkg / 'models' / 'standin.py').write_text(STANDIN_MODEL)
    # OSEDiff's ram/models/utils.py: a tokenizer path that exists only on its authors' machine.
    (pkg / 'models' / 'utils.py').write_text(textwrap.dedent('''
        from transformers import BertTokenizer
        def init_tokenizer():
            tokenizer = BertTokenizer.from_pretrained(
                '/home/notebook/data/group/LowLevelLLM/LLM/bert-base-uncased', local_files_only=True)
            tokenizer.add_special_tokens({'bos_token': '[DEC]'})
            tokenizer.add_special_tokens({'additional_special_tokens': ['[ENC]']})
            tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
            return tokenizer
    '''))
    (pkg / 'models' / '__init__.py').write_text(textwrap.dedent('''
        from .standin import CALLS, StandInRAM, load_pretrained
        def ram(pretrained='', **kwargs):
            CALLS.append(('ram', pretrained, kwargs))
            return load_pretrained(StandInRAM(' | ', **kwargs), pretrained)
        def ram_plus(pretrained='', **kwargs):
            CALLS.append(('ram_plus', pretrained, kwargs))
            return load_pretrained(StandInRAM(' | ', **kwargs), pretrained)
    '''))
    if with_lora:
        (pkg / 'models' / 'ram_lora.py').write_text(textwrap.dedent('''
            from .standin import CALLS, StandInRAM, load_pretrained
            def ram(pretrained='', pretrained_condition='', **kwargs):
                CALLS.append(('ram_lora', pretrained, dict(kwargs, condition=pretrained_condition)))
                return load_pretrained(StandInRAM(', ', **kwargs), pretrained)
        '''))


@pytest.fixture(scope='module')
def bert_folder(tmp_path_factory):
    return save_bert_tokenizer(str(tmp_path_factory.mktemp('bert')), vocab_size=200)


@pytest.fixture
def standin_ram(tmp_path, monkeypatch, bert_folder):
    """Put the stand-in ``ram`` package on sys.path (and drop it afterwards); $ICMSR_BERT set."""
    monkeypatch.setenv('ICMSR_BERT', bert_folder)

    def install(with_lora=False):
        for name in [m for m in sys.modules if m == 'ram' or m.startswith('ram.')]:
            monkeypatch.delitem(sys.modules, name)  # a real ram imported before comes back after
        _write_standin(tmp_path / 'site', with_lora)
        monkeypatch.syspath_prepend(str(tmp_path / 'site'))
        importlib.invalidate_caches()
        return importlib.import_module('ram')
    yield install
    for name in [m for m in sys.modules if m == 'ram' or m.startswith('ram.')]:
        del sys.modules[name]


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / 'ram_swin_large_14m.pth'
    torch.save({'model': {'weight': torch.zeros(1)}}, path)  # RAM's layout
    return str(path)


def _batch():
    """Three 64x48 images: bright red, dark, bright blue."""
    x = torch.full((3, 3, 48, 64), 0.2)
    x[0, 0] = 0.9
    x[0, 1:] = 0.6
    x[2] = 0.7
    x[2, 2] = 1.0
    return x


def test_ram_tagger_builds_the_package_model_and_tags_each_image(standin_ram, weights):
    ram = standin_ram()
    tagger = MODELS.build(dict(type='RAMTagger', weights=weights, batch_size=2))
    prompts = tagger(_batch())
    # Normalised image mean: > 0 for the two bright images; 'red' only for the first.
    assert prompts == ['bright, red', 'dark', 'bright']
    assert ram.models.CALLS == [('ram', weights, dict(image_size=384, vit='swin_l'))]
    model = tagger.model
    assert not model.training and not model.weight.requires_grad
    # Chunks of batch_size, each resized to 384x384 and normalised (ImageNet statistics).
    assert [tuple(x.shape) for x in model.inputs] == [(2, 3, 384, 384), (1, 3, 384, 384)]
    assert torch.allclose(model.inputs[0][1], ram.get_transform(384)(_pil(_batch()[1])),
                          atol=1e-5)
    # The package's single-image entry point gives the same tags (' | ' joined).
    tags, _ = ram.inference_ram(model.inputs[0][:1], model)
    assert tags.replace(' | ', ', ') == prompts[0]


def test_ram_preprocessing_is_osedifffs_tensor_resize(standin_ram, weights):
    import torchvision.transforms as T
    ram = standin_ram()
    g = torch.Generator().manual_seed(0)
    image = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 96, 128, generator=g), 3, 1, 1)
    tagger = RAMTagger('ram', weights=weights)
    tagger(image)
    # OSEDiff: Resize((384, 384)) then Normalize on the [0, 1] tensor; torchvision 0.15
    # (its pin) does not antialias tensors.
    osediff = T.Compose([T.Resize((384, 384), antialias=False),
                         T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    assert torch.allclose(tagger.model.inputs[0], osediff(image), atol=1e-5)
    # antialias=True follows RAM's own PIL transform (8-bit rounding apart).
    smooth = RAMTagger('ram', weights=weights, antialias=True)
    smooth(image)
    ref = ram.get_transform(384)(_pil(image[0]))
    assert (smooth.model.inputs[0][0] - ref).abs().mean() < 0.02


def _pil(x):
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _dape_file(path, **tensors):
    """A DAPE.pth in SeeSR's layout: a flat state dict."""
    torch.save({k: v for k, v in tensors.items()}, path)
    return str(path)


def test_ram_plus_and_dape_variants_and_weights_from_env(standin_ram, weights, tmp_path,
                                                         monkeypatch):
    ram = standin_ram(with_lora=True)
    monkeypatch.setenv('ICMSR_RAM_PLUS', weights)
    assert RAMTagger('ram_plus')(_batch()[:1]) == ['bright, red']
    dape = _dape_file(tmp_path / 'DAPE.pth', weight=torch.tensor([3.0]))
    monkeypatch.setenv('ICMSR_RAM', weights)
    monkeypatch.setenv('ICMSR_DAPE', dape)
    tagger = build_prompt_extractor('dape')
    assert tagger(_batch()) == ['bright, red', 'dark', 'bright']
    # DAPE's weights are loaded by the tagger (pretrained_condition is not handed to ram,
    # whose torch.load has no map_location).
    assert ram.models.CALLS[-1] == ('ram_lora', weights,
                                    dict(image_size=384, vit='swin_l', condition=''))
    assert tagger.model.weight.item() == 3.0
    assert [c[0] for c in ram.models.CALLS] == ['ram_plus', 'ram_lora']


def test_both_variants_load_the_tokenizer_the_user_names(standin_ram, weights, bert_folder,
                                                         tmp_path, monkeypatch):
    standin_ram(with_lora=True)
    dape = _dape_file(tmp_path / 'DAPE.pth', weight=torch.tensor([1.0]))
    # The stand-in's init_tokenizer asks for OSEDiff's hard-coded path; $ICMSR_BERT is used.
    for tagger in (RAMTagger('ram', weights=weights),
                   RAMTagger('dape', weights=weights, condition_weights=dape)):
        tagger(_batch()[:1])
        tok = tagger.model.tokenizer
        assert tok.name_or_path == bert_folder
        # What init_tokenizer adds on top, under this transformers too.
        assert len(tok) == 202 and tok.enc_token_id == tok.convert_tokens_to_ids('[ENC]')
    other = save_bert_tokenizer(str(tmp_path / 'other_bert'), vocab_size=150)
    tagger = MODELS.build(dict(type='RAMTagger', weights=weights, tokenizer=other))
    tagger(_batch()[:1])
    assert tagger.model.tokenizer.name_or_path == other and len(tagger.model.tokenizer) == 152
    import ram.models.utils
    from transformers import BertTokenizer
    assert ram.models.utils.BertTokenizer is BertTokenizer  # restored after the build
    monkeypatch.delenv('ICMSR_BERT')
    assert RAMTagger('ram', weights=weights).tokenizer == 'bert-base-uncased'
    with pytest.raises(FileNotFoundError, match=r"'/no/bert'.*ICMSR_BERT"):
        RAMTagger('ram', weights=weights, tokenizer='/no/bert')


def test_dape_weights_load_on_the_cpu_and_by_the_trust_rules(standin_ram, weights, tmp_path,
                                                             monkeypatch):
    # A DAPE.pth saved from CUDA: its storages are tagged 'cuda:0' (written here by
    # tagging the location torch records, as saving on a GPU does).
    with monkeypatch.context() as patch:
        patch.setattr(torch.serialization, 'location_tag', lambda storage: 'cuda:0')
        dape = _dape_file(tmp_path / 'DAPE_cuda.pth', weight=torch.tensor([2.0]))
    standin_ram(with_lora=True)
    if not torch.cuda.is_available():  # what ram_lora's torch.load(pretrained_condition) meets
        with pytest.raises(RuntimeError, match='CUDA'):
            torch.load(dape)
    tagger = RAMTagger('dape', weights=weights, condition_weights=dape)
    tagger(_batch()[:1])
    assert tagger.model.weight.item() == 2.0

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    foreign = tmp_path / 'DAPE_foreign.pth'
    torch.save({'weight': torch.tensor([5.0]), 'extra': Payload()}, foreign)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')  # ignored: only the key trusts
    with pytest.raises(Exception, match=r'Refusing to unpickle .*DAPE_foreign\.pth.*trust_checkpoint'):
        RAMTagger('dape', weights=weights, condition_weights=str(foreign))(_batch()[:1])
    trusted = RAMTagger('dape', weights=weights, condition_weights=str(foreign),
                        trust_checkpoint=True)
    trusted(_batch()[:1])
    assert trusted.model.weight.item() == 5.0
    # RAM's {'model': state_dict} loads under weights_only; anything else in it is refused.
    ram_foreign = tmp_path / 'ram_foreign.pth'
    torch.save({'model': {'weight': torch.tensor([7.0])}, 'args': Payload()}, ram_foreign)
    with pytest.raises(Exception, match=r'Refusing to unpickle .*ram_foreign\.pth.*trust_checkpoint'):
        RAMTagger('ram', weights=str(ram_foreign))(_batch()[:1])
    trusted = RAMTagger('ram', weights=str(ram_foreign), trust_checkpoint=True)
    trusted(_batch()[:1])
    assert trusted.model.weight.item() == 7.0
    unrelated = _dape_file(tmp_path / 'other.pth', unet=torch.zeros(1))
    with pytest.raises(ValueError, match=r'other\.pth.*no parameter of the DAPE model'):
        RAMTagger('dape', weights=weights, condition_weights=unrelated)(_batch()[:1])


def test_ram_tagger_errors_name_the_env_var_download_and_install(standin_ram, weights,
                                                                 monkeypatch):
    monkeypatch.delenv('ICMSR_RAM', raising=False)
    monkeypatch.delenv('ICMSR_DAPE', raising=False)
    with pytest.raises(FileNotFoundError, match=r'ICMSR_RAM=.*huggingface\.co/.*ram_swin_large'):
        RAMTagger('ram')
    with pytest.raises(FileNotFoundError, match=r"'/nope\.pth'.*ICMSR_RAM"):
        RAMTagger('ram', weights='/nope.pth')
    with pytest.raises(FileNotFoundError, match='ICMSR_DAPE'):
        RAMTagger('dape', weights=weights)
    # Weights present, package absent: how to install it (it is not on PyPI).
    monkeypatch.setitem(sys.modules, 'ram', None)  # hides a ram on PYTHONPATH too
    with pytest.raises(ImportError, match=r'not installed.*pip install --no-deps git\+https://'
                                          r'github\.com/xinyu1205/.*\[prompts\]'):
        RAMTagger('ram', weights=weights)
    # Upstream ram without OSEDiff's ram_lora: DAPE fails when built, before any training.
    standin_ram(with_lora=False)
    monkeypatch.setenv('ICMSR_DAPE', weights)
    with pytest.raises(ImportError, match=r"'ram\.models\.ram_lora'.*has no .*ram_lora\.py.*OSEDiff"):
        RAMTagger('dape', weights=weights)
    assert 'ram.models' not in sys.modules  # found without importing
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        RAMTagger('ram', weights=weights)(torch.rand(3, 8, 8))


def test_ram_import_errors_say_what_failed(standin_ram, weights, tmp_path, monkeypatch):
    ram = standin_ram(with_lora=True)
    lora = os.path.join(os.path.dirname(ram.__file__), 'models', 'ram_lora.py')
    with open(lora) as f:
        source = f.read()
    # OSEDiff's ram_lora imports loralib; the package declares none of its dependencies.
    with open(lora, 'w') as f:
        f.write('import loralib\n' + source)
    monkeypatch.setitem(sys.modules, 'loralib', None)
    tagger = RAMTagger('dape', weights=weights, condition_weights=weights)
    with pytest.raises(ImportError, match=r"imports 'loralib', which is not installed.*"
                                          r"pip install -e '\.\[prompts\]'"):
        tagger(_batch()[:1])
    # Installed, but failing under this transformers: say so, not "install it".
    init = os.path.join(os.path.dirname(ram.__file__), 'models', '__init__.py')
    with open(init, 'a') as f:
        f.write('from transformers.modeling_utils import removed_in_this_version\n')
    for name in [m for m in sys.modules if m.startswith('ram.')]:
        del sys.modules[name]
    importlib.invalidate_caches()
    with pytest.raises(ImportError) as info:
        RAMTagger('ram', weights=weights)(_batch()[:1])
    message = str(info.value)
    assert 'is installed but does not import' in message and 'removed_in_this_version' in message
    import transformers
    assert f'transformers {transformers.__version__}' in message
    assert 'not installed' not in message and 'PyPI' not in message


@pytest.fixture(scope='module')
def tiny_blip(tmp_path_factory):
    spec = importlib.util.spec_from_file_location(
        'prompt_extraction', os.path.join(ROOT, 'tools', 'benchmarks', 'prompt_extraction.py'))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.save_tiny_blip(str(tmp_path_factory.mktemp('tiny_blip')))


def test_hf_captioner_matches_transformers_itself(tiny_blip):
    from transformers import AutoProcessor, BlipForConditionalGeneration
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 40, 56, generator=g)
    images[1] *= 0.1
    captioner = MODELS.build(dict(type='HFCaptioner', model=tiny_blip,
                                             local_files_only=True, batch_size=2))
    captions = captioner(images)
    # Independent path: the saved folder through transformers' own classes.
    processor = AutoProcessor.from_pretrained(tiny_blip)
    model = BlipForConditionalGeneration.from_pretrained(tiny_blip).eval()
    inputs = processor(images=list(images), return_tensors='pt', do_rescale=False)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=30)
    ref = [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    assert captions == ref
    assert all(isinstance(c, str) and c for c in captions)
    assert type(captioner.model).__name__ == 'BlipForConditionalGeneration'
    assert not any(p.requires_grad for p in captioner.model.parameters())
    # Conditional captioning: the text prefix changes what is generated.
    prefixed = HFCaptioner(tiny_blip, text='a photo of', local_files_only=True)(images[:1])
    assert prefixed[0].startswith('a photo of')


def test_hf_captioner_bad_model_says_which(tmp_path):
    with pytest.raises(OSError, match='could not load'):
        HFCaptioner(str(tmp_path / 'missing'), local_files_only=True)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match='hub id or a folder'):
        HFCaptioner('')


def test_build_prompt_extractor_names_and_errors(tiny_blip):
    assert isinstance(build_prompt_extractor(dict(type='HFCaptioner', model=tiny_blip)),
                      HFCaptioner)
    with pytest.raises(KeyError, match='unknown prompt extractor'):
        build_prompt_extractor('clip-interrogator')
    with pytest.raises(KeyError, match='unknown prompt extractor'):
        build_prompt_extractor('ConditionExtractor')  # registered, but not an extractor
    assert {'HFCaptioner', 'RAMTagger'} <= set(registered_extractors())
    assert issubclass(RAMTagger, PromptExtractor) and issubclass(HFCaptioner, PromptExtractor)


def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'extract_prompts', os.path.join(ROOT, 'tools', 'extract_prompts.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _image_folder(root):
    rng = np.random.default_rng(0)
    (root / 'sub').mkdir(parents=True)
    for rel in ('a.png', 'b.jpg', 'sub/c.png'):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / rel)
    (root / 'broken.png').write_bytes(b'not an image')
    return root


def test_extract_prompts_tool_writes_resumable_caption_files_the_datasets_read(tiny_blip,
                                                                               tmp_path):
    from icmsr.datasets import HQImageDataset
    from icmsr.fileio.captions import load_captions
    tool = _load_tool()
    images = _image_folder(tmp_path / 'images')
    cfg = tmp_path / 'blip_extractor.py'
    cfg.write_text(f'extractor = dict(type="HFCaptioner", model={tiny_blip!r}, '
                   'local_files_only=True)\n')
    out = tmp_path / 'captions' / 'captions.json'
    argv = ['--input', str(images), '--extractor', str(cfg), '--out', str(out), '--device',
            'cpu', '--no-progress', '--save-every', '2']
    with pytest.warns(UserWarning, match=r'skipping .*broken\.png'):
        result = tool.main(argv)
    assert result['skipped_bad'] == ['broken.png']
    captions = load_captions(str(out))
    assert sorted(captions) == ['a.png', 'b.jpg', 'sub/c.png']
    # The captions are the captioner's own output for each image.
    captioner = HFCaptioner(tiny_blip, local_files_only=True)
    x = torch.from_numpy(np.array(Image.open(images / 'a.png'))).permute(2, 0, 1)[None] / 255
    assert captions['a.png'] == captioner(x.float())[0]
    assert not [p for p in os.listdir(out.parent) if p.endswith('.tmp')]

    # Resumable: kept captions stay, only new images are captioned.
    captions['a.png'] = 'kept'
    out.write_text(json.dumps(captions))
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(images / 'd.png')
    with pytest.warns(UserWarning, match='broken.png'):
        again = tool.main(argv)
    assert again['new'] == ['d.png']
    assert load_captions(str(out))['a.png'] == 'kept'

    # What the datasets read: relative paths as keys.
    (images / 'broken.png').unlink()
    ds = HQImageDataset(folders=[str(images)], caption_file=str(out), pipeline=[])
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    prompts = {os.path.relpath(info['gt_path'], images): info['prompt'] for info in infos}
    assert prompts == load_captions(str(out))

    # The TAB format (any other extension), names in the same form.
    tsv = tmp_path / 'captions.txt'
    tool.main(['--input', str(images), '--extractor', str(cfg), '--out', str(tsv),
               '--device', 'cpu', '--no-progress'])
    lines = tsv.read_text().splitlines()
    assert [line.split('\t')[0] for line in lines] == ['a.png', 'b.jpg', 'd.png', 'sub/c.png']
    assert load_captions(str(tsv))['b.jpg'] == load_captions(str(out))['b.jpg']
