"""The shipped tiny base (configs/tiny_base) and the script that regenerates it.

* The folder loads through the same ``from_pretrained`` builders as SD v1-4, via the
  entries of ``configs/icmsr_tiny_base.py``, as float32, with the architecture of the tiny config's
  dicts; every file is under 2 MB and matches the sha256 its README lists.
* Its VAE reconstructs a photo it never saw far better than a random VAE (PSNR by
  OpenCV on 8-bit images).
* ``tools/pretrain_tiny_base.py`` is deterministic: two short runs with one seed give
  bitwise identical tensors and saved files; another seed does not.
"""
import hashlib
import importlib.util
import os
import os.path as osp
import re
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from icmsr.registry import MODELS
from icmsr.utils.setup_env import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE = osp.join(ROOT, 'configs', 'tiny_base')
CONFIG = osp.join(ROOT, 'configs', 'icmsr_tiny_base.py')
# Measured: shipped VAE 20.1 dB on the held-out photo, random VAEs about 12 dB.
MIN_PSNR, MIN_GAIN_DB = 18.0, 6.0


def _script():
    # The script imports its sibling modules in tools/, as it does when run.
    if osp.join(ROOT, 'tools') not in sys.path:
        sys.path.insert(0, osp.join(ROOT, 'tools'))
    spec = importlib.util.spec_from_file_location(
        'pretrain_tiny_base', osp.join(ROOT, 'tools', 'pretrain_tiny_base.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def cfg():
    register_all_modules()
    return Config.fromfile(CONFIG)


def _files(folder):
    return sorted(osp.relpath(osp.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_config_loads_the_shipped_base_like_sd(cfg):
    from diffusers import AutoencoderKL, DDPMScheduler, MultiAdapter, UNet2DConditionModel
    from transformers import CLIPTextModel
    model = cfg.model
    for key in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        assert osp.samefile(model[key].from_pretrained, BASE) and model[key].subfolder == key
    unet, vae = MODELS.build(model.unet), MODELS.build(model.vae)
    text = MODELS.build(model.text_encoder)
    adapter = MODELS.build(dict(model.condition, type='TeacherCondition')).adapter
    assert isinstance(unet, UNet2DConditionModel) and isinstance(vae, AutoencoderKL)
    assert isinstance(text, CLIPTextModel) and isinstance(adapter, MultiAdapter)
    assert isinstance(MODELS.build(model.scheduler), DDPMScheduler)
    for module in (unet, vae, text, adapter):
        assert {p.dtype for p in module.parameters()} == {torch.float32}
        assert not any(p.requires_grad for p in module.parameters())
    for adapter_cfg, sub in zip(model.condition.adapters, ('adapter_color', 'adapter_canny')):
        assert osp.samefile(adapter_cfg.from_pretrained, BASE) and adapter_cfg.subfolder == sub
    # Same architecture as the config's dicts (what the script built and trained).
    built = {'unet': (unet, dict(type='SDUNet', from_config=cfg.tiny_unet)),
             'vae': (vae, dict(type='SDVAE', from_config=cfg.tiny_vae)),
             'text': (text, dict(type='SDTextEncoder', from_config=cfg.tiny_text_encoder)),
             'color': (adapter.adapters[0],
                       dict(type='SDT2IAdapter', from_config=cfg.tiny_adapter_color)),
             'canny': (adapter.adapters[1],
                       dict(type='SDT2IAdapter', from_config=cfg.tiny_adapter_canny))}
    for name, (loaded, arch_cfg) in built.items():
        fresh = MODELS.build(arch_cfg)
        shapes = {k: v.shape for k, v in fresh.state_dict().items()}
        assert {k: v.shape for k, v in loaded.state_dict().items()} == shapes, name
    # The shipped UNet is not the random initialisation of its architecture.
    torch.manual_seed(0)
    fresh_unet = MODELS.build(dict(type='SDUNet', from_config=cfg.tiny_unet))
    assert not torch.equal(fresh_unet.conv_in.weight, unet.conv_in.weight)
    # The saved tokenizer is the byte-level one the script builds (and icmsr_tiny.py loads).
    saved = MODELS.build(model.tokenizer)
    tiny = _script().byte_level_tokenizer()
    for text_in in ('', 'a photo of a cat', 'Überall: 42!'):
        assert saved(text_in).input_ids == tiny(text_in).input_ids
    assert (len(saved), saved.model_max_length) == (len(tiny), tiny.model_max_length)


def test_shipped_files_are_small_and_match_the_readme():
    readme = open(osp.join(BASE, 'README.md')).read()
    listed = dict(re.findall(r'\| `([^`]+)` \| `([0-9a-f]{64})` \|', readme))
    files = [f for f in _files(BASE) if f != 'README.md']
    assert sorted(listed) == files
    for name in files:
        assert osp.getsize(osp.join(BASE, name)) < 2 * 1024 * 1024, name
        assert _sha256(osp.join(BASE, name)) == listed[name], name
    assert 'python tools/pretrain_tiny_base.py' in readme and 'seed 0' in readme


def test_shipped_vae_reconstructs_a_held_out_photo(cfg):
    script = _script()
    image = script.held_out_image(128)
    gt8 = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    def psnr_of(vae):
        rec = script.reconstruct(vae.eval(), image)
        rec8 = (rec[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return cv2.PSNR(gt8, rec8)

    shipped = psnr_of(MODELS.build(cfg.model.vae))
    torch.manual_seed(0)
    random = max(psnr_of(MODELS.build(dict(type='SDVAE', from_config=cfg.tiny_vae)))
                 for _ in range(2))
    assert shipped >= MIN_PSNR and shipped >= random + MIN_GAIN_DB, (shipped, random)


def test_pretraining_is_bitwise_reproducible(tmp_path):
    # One thread and deterministic algorithms: CPU float results repeat exactly, so the
    # tolerance is zero; a few steps of every stage on two images keep the test short.
    script = _script()
    steps = dict(vae=2, unet=2, adapter=2)
    images = ('astronaut', 'coffee')

    def run(seed, out):
        stack = script.pretrain(seed, steps, images=images, log=False)
        script.save_base(stack, str(out), 'test', seed, steps, {'vae_psnr': 0.0})
        return {f'{name}.{k}': v.clone() for name, m in stack.items()
                if isinstance(m, torch.nn.Module) for k, v in m.state_dict().items()}

    first, second = run(0, tmp_path / 'a'), run(0, tmp_path / 'b')
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    files = _files(tmp_path / 'a')
    assert files == _files(tmp_path / 'b') and 'unet/config.json' in files
    for name in files:
        assert _sha256(tmp_path / 'a' / name) == _sha256(tmp_path / 'b' / name), name
    other = script.pretrain(1, steps, images=images, log=False)
    assert not torch.equal(other['unet'].conv_in.weight, first['unet.conv_in.weight'])


def test_documented_command_writes_a_loadable_base(tmp_path):
    """The README's command end to end (one step per stage): figures, hashes, loadable folder."""
    register_all_modules()
    out = tmp_path / 'base'
    _script().main(['--out', str(out), '--seed', '0', '--vae-steps', '1', '--unet-steps', '1',
                    '--adapter-steps', '1'])
    readme = (out / 'README.md').read_text()
    assert f'python tools/pretrain_tiny_base.py --out {out} --seed 0 --vae-steps 1' in readme
    for figure in ('vae_psnr', 'denoise_loss', 'x0_mse_text', 'x0_mse_color', 'x0_mse_canny'):
        assert re.search(rf'\| {figure} \| -?\d+\.\d+ \|', readme), figure
    listed = dict(re.findall(r'\| `([^`]+)` \| `([0-9a-f]{64})` \|', readme))
    assert sorted(listed) == [f for f in _files(out) if f != 'README.md']
    assert all(_sha256(out / name) == digest for name, digest in listed.items())
    # Loaded back through the builders the configs use, as configs/icmsr_tiny_base.py does.
    builders = dict(unet='SDUNet', vae='SDVAE', text_encoder='SDTextEncoder',
                    tokenizer='SDTokenizer', scheduler='SDScheduler',
                    adapter_color='SDT2IAdapter', adapter_canny='SDT2IAdapter')
    for sub, builder in builders.items():
        MODELS.build(dict(type=builder, from_pretrained=str(out), subfolder=sub))
