"""Export round trip: LoRA safetensors + JSON -> rebuilt model gives identical outputs; base fingerprints."""
import copy
import json
import os

import pytest
import torch
from safetensors import safe_open

from apis_helpers import randomize_lora
from icmsr.apis import export_model, init_model, read_description
from icmsr.models import OneStepSR
from icmsr.models.base_fingerprint import BaseMismatchError


def _sr(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(16, 16), mode='bilinear')
    return model.super_resolve(lq, ['a house'])


@pytest.fixture(scope='module')
def export_dir(trained, pretrained_cfg, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('export'))
    export_model(trained, out, OneStepSR.inference_config(pretrained_cfg), extra=dict(note='test'),
                 merged=True)
    return out


def test_files_and_description(export_dir, tiny_sd_folder, trained):
    names = set(os.listdir(export_dir))
    assert {'unet_lora.safetensors', 'vae_lora.safetensors', 'unet_conv_in.safetensors',
            'icmsr_lora.json', 'merged'} <= names
    meta = read_description(export_dir)
    assert meta['base_model'] == tiny_sd_folder
    assert meta['model']['generator']['timestep'] == 999 and meta['scale'] == 4
    assert meta['unet_lora']['rank'] == 4 and meta['unet_lora']['alpha'] == 8
    assert meta['model']['type'] == 'OneStepSR' and 'condition' not in meta['model']
    assert meta['base_fingerprint'] == trained.base_fingerprint and meta['note'] == 'test'
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
    plain = init_model(merged_cfg, None, fuse=False, allow_untrained=True)
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
    override = gen.roles.override(gen.unet.conv_in, 'generator', None)
    try:
        x, t = torch.randn(1, 4, 8, 8), torch.tensor([999])
        e = trained.encode_prompts(['a house'])
        with torch.no_grad(), gen.roles.use('generator'):
            ours = gen.unet(x, t, encoder_hidden_states=e).sample
        theirs = unet(x, t, encoder_hidden_states=e).sample
    finally:
        gen.roles.override(gen.unet.conv_in, 'generator', override)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_checkpoint_of_the_training_model_loads(pretrained_cfg, tmp_path):
    from icmsr.registry import MODELS
    from icmsr.utils.setup_env import register_all_modules
    register_all_modules()
    cfg = copy.deepcopy(pretrained_cfg)
    cfg.update(lpips=None, loss_weights=dict(l2=1.0, lpips=0.0, reg=1.0))
    torch.manual_seed(0)
    icmsr_model = MODELS.build(cfg)
    randomize_lora(icmsr_model.generator, seed=11)
    path = str(tmp_path / 'iter_1.pth')
    torch.save(dict(meta=dict(iter=1), state_dict=icmsr_model.state_dict()), path)
    model = init_model(cfg, path, fuse=False)
    # Inference builds the base class only: no teacher condition, aux model or LPIPS.
    assert type(model) is OneStepSR and not hasattr(model, 'aux_diffusion')
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
    with pytest.raises(ValueError, match='allow_untrained'):
        init_model(pretrained_cfg, None)


def _random_base_cfg(seed):
    from tiny_config import tiny_model_cfg
    return OneStepSR.inference_config(tiny_model_cfg(None, base_seed=seed))


def test_lora_never_lands_silently_on_another_base(tmp_path):
    model = init_model(_random_base_cfg(0), None, fuse=False, allow_untrained=True)
    randomize_lora(model.generator, seed=3)
    out = str(tmp_path / 'rand')
    export_model(model, out, _random_base_cfg(0))
    ckpt = str(tmp_path / 'iter_1.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    # The same seed rebuilds the same random base: export and checkpoint load, bit-identical.
    assert torch.equal(_sr(init_model(None, out, fuse=False)), _sr(model))
    assert torch.equal(_sr(init_model(_random_base_cfg(0), ckpt, fuse=False)), _sr(model))
    # Another seed is another base: both ways in refuse, naming both bases.
    for cfg, weights in ((_random_base_cfg(1), out), (_random_base_cfg(1), ckpt)):
        with pytest.raises(BaseMismatchError, match=r'random \(base_seed=0\).*now random \(base_seed=1\)'):
            init_model(cfg, weights, fuse=False)
        with pytest.warns(UserWarning, match='another frozen base'):
            init_model(cfg, weights, fuse=False, base_check='warn')


def test_export_tool_cli(trained, pretrained_cfg, tmp_path):
    import importlib.util
    from pathlib import Path
    from mmengine.config import Config
    cfg_path = str(tmp_path / 'cfg.py')
    Config(dict(model=pretrained_cfg)).dump(cfg_path)
    ckpt = str(tmp_path / 'iter_5.pth')
    torch.save(dict(meta=dict(iter=5), state_dict=trained.state_dict()), ckpt)
    script = Path(__file__).resolve().parents[2] / 'tools' / 'export_lora.py'
    spec = importlib.util.spec_from_file_location('export_tool', script)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = str(tmp_path / 'exp')
    assert tool.main([ckpt, '--config', cfg_path, '--out', out]) == 0
    assert read_description(out)['source_checkpoint'] == ckpt
    assert torch.equal(_sr(init_model(None, out, fuse=False)), _sr(trained))


def test_truncated_safetensors_error_names_the_file(trained, tmp_path):
    out = str(tmp_path / 'exp')
    export_model(trained, out, OneStepSR.inference_config(_random_base_cfg(0)))
    path = os.path.join(out, 'vae_lora.safetensors')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(OSError, match=r'vae_lora\.safetensors is not a readable safetensors file'):
        init_model(None, out, fuse=False, base_check='warn')
