"""Export round trip: LoRA safetensors + JSON -> rebuilt generator gives identical outputs."""
import copy
import json
import os

import pytest
import torch
from safetensors import safe_open

from apis_helpers import randomize_lora
from icmsr.apis import (TiledSuperResolver, describe_generator, export_generator, init_model,
                        read_description)
from icmsr.apis.model_loading import generator_and_text_cfgs, model_scale


def _sr(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(16, 16), mode='bilinear')
    return TiledSuperResolver(model.generator, model.encode_prompts, model.scale)(lq, 'a house')


@pytest.fixture(scope='module')
def trained(pretrained_cfg):
    torch.manual_seed(0)
    model = init_model(pretrained_cfg, None, fuse=False)
    randomize_lora(model.generator, seed=7)
    return model


@pytest.fixture(scope='module')
def export_dir(trained, pretrained_cfg, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('export'))
    cfgs = generator_and_text_cfgs(pretrained_cfg)
    desc = describe_generator(cfgs['generator'], cfgs['text'], model_scale(pretrained_cfg),
                              extra=dict(note='test'))
    export_generator(trained.generator, out, desc, merged=True)
    return out


def test_files_and_description(export_dir, tiny_sd_folder):
    names = set(os.listdir(export_dir))
    assert {'unet_lora.safetensors', 'vae_lora.safetensors', 'unet_conv_in.safetensors',
            'icmsr_lora.json', 'merged'} <= names
    meta = read_description(export_dir)
    assert meta['base_model'] == tiny_sd_folder
    assert meta['timestep'] == 999 and meta['scale'] == 4 and meta['unet_lora']['rank'] == 4
    assert meta['unet_lora']['alpha'] == 8 and meta['random_base_components'] == []
    with safe_open(os.path.join(export_dir, 'unet_lora.safetensors'), 'pt') as f:
        keys = list(f.keys())
        peft_cfg = json.loads(f.metadata()['lora_adapter_metadata'])
    assert all(k.startswith('unet.') and ('.lora_A.weight' in k or '.lora_B.weight' in k) for k in keys)
    assert peft_cfg['unet.r'] == 4 and len(peft_cfg['unet.target_modules']) == len(keys) // 2


def test_round_trip_is_identical(trained, export_dir):
    reloaded = init_model(None, export_dir, fuse=False)
    assert torch.equal(_sr(reloaded), _sr(trained))
    for (ka, a), (kb, b) in zip(sorted(trained.generator.state_dict().items()),
                                sorted(reloaded.generator.state_dict().items())):
        assert ka == kb and torch.equal(a, b), ka


def test_fused_reload_and_merged_folder_match(trained, export_dir, pretrained_cfg):
    ref = _sr(trained)
    fused = init_model(None, export_dir, fuse=True)
    assert torch.allclose(_sr(fused), ref, atol=1e-4)
    merged_cfg = copy.deepcopy(pretrained_cfg)
    merged = os.path.join(export_dir, 'merged')
    merged_cfg['unet'] = dict(type='SDUNet', from_pretrained=merged, subfolder='unet')
    merged_cfg['vae'] = dict(type='SDVAE', from_pretrained=merged, subfolder='vae')
    merged_cfg['generator'] = dict(timestep=999, vae_lora_targets=None)  # plain weights, no LoRA left
    plain = init_model(merged_cfg, None, fuse=False)
    with torch.no_grad():
        for b in plain.generator.unet_lora.values():
            b.up.weight.zero_()  # a zero branch is the identity
    assert torch.allclose(_sr(plain), ref, atol=1e-4)


def test_plain_diffusers_loads_the_unet_lora(trained, export_dir, tiny_sd_folder):
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(os.path.join(tiny_sd_folder, 'unet'))
    # weight_name makes diffusers read the LoraConfig (alpha 8 at rank 4) from the file header.
    unet.load_lora_adapter(export_dir, weight_name='unet_lora.safetensors', prefix='unet',
                           adapter_name='icmsr')
    assert unet.peft_config['icmsr'].lora_alpha == 8
    gen = trained.generator
    # Compare the UNet alone (without our conv_in copy, which the LoRA file does not carry).
    override = gen.unet.conv_in._icmsr_overrides.pop('generator')
    try:
        x, t = torch.randn(1, 4, 8, 8), torch.tensor([999])
        e = trained.encode_prompts(['a house'])
        with torch.no_grad(), gen.roles.use('generator'):
            ours = gen.unet(x, t, encoder_hidden_states=e).sample
        theirs = unet(x, t, encoder_hidden_states=e).sample
    finally:
        gen.unet.conv_in._icmsr_overrides['generator'] = override
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_checkpoint_of_the_training_model_loads(pretrained_cfg, tmp_path):
    from icmsr.registry import MODELS, register_all_modules
    register_all_modules()  # ICMSR's data preprocessor is built through MMEngine's default scope
    cfg = copy.deepcopy(pretrained_cfg)
    cfg.update(lpips=None, loss_weights=dict(l2=1.0, lpips=0.0, reg=1.0))
    torch.manual_seed(0)
    icmsr_model = MODELS.build(cfg)
    randomize_lora(icmsr_model.generator, seed=11)
    path = str(tmp_path / 'iter_1.pth')
    torch.save(dict(meta=dict(iter=1), state_dict=icmsr_model.state_dict()), path)
    model = init_model(cfg, path, fuse=False)
    for name, p in icmsr_model.generator.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, model.generator.get_parameter(name)), name
    assert any(k.startswith('aux_diffusion.') for k in icmsr_model.state_dict())  # ignored, not an error


def test_errors_name_the_problem(tmp_path, trained, pretrained_cfg):
    with pytest.raises(FileNotFoundError, match='icmsr_lora.json'):
        read_description(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='do not exist'):
        init_model(pretrained_cfg, str(tmp_path / 'nope.pth'))
    bad = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': {'generator.unet_lora.x.down.weight': torch.zeros(1)}}, bad)
    with pytest.raises(KeyError, match='lacks generator weights'):
        init_model(pretrained_cfg, bad)
    # A description built on random weights cannot be rebuilt without a base model.
    from icmsr.models import tiny_icmsr_config
    random_cfg = tiny_icmsr_config()
    cfgs = generator_and_text_cfgs(random_cfg)
    desc = describe_generator(cfgs['generator'], cfgs['text'], 4)
    assert desc['random_base_components'] == ['unet', 'vae']
    out = str(tmp_path / 'rand')
    export_generator(init_model(random_cfg, None, fuse=False).generator, out, desc)
    with pytest.raises(ValueError, match='base_model'):
        init_model(None, out)


def test_export_tool_cli(trained, pretrained_cfg, tmp_path):
    import importlib.util
    from pathlib import Path
    from mmengine.config import Config
    cfg_path = str(tmp_path / 'cfg.py')
    Config(dict(model=pretrained_cfg)).dump(cfg_path)
    ckpt = str(tmp_path / 'iter_5.pth')
    state = {f'generator.{k}': v for k, v in trained.generator.state_dict().items()
             if 'lora' in k or k.startswith('conv_in.')}
    torch.save(dict(meta=dict(iter=5), state_dict=state), ckpt)
    script = Path(__file__).resolve().parents[2] / 'tools' / 'export_lora.py'
    spec = importlib.util.spec_from_file_location('export_tool', script)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / 'exp')
    assert tool.main([ckpt, '--config', cfg_path, '--out', out]) == 0
    assert read_description(out)['source_checkpoint'] == ckpt
    assert torch.equal(_sr(init_model(None, out, fuse=False)), _sr(trained))
