"""tools/convert_osediff.py: a checkpoint in OSEDiff's exact layout, over a tiny SD-2.1-like base,
converts into a model whose output equals OSEDiff's computation built directly with peft."""
import copy
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from tiny_config import ROOT, arch_entry

spec = importlib.util.spec_from_file_location('convert_osediff',
                                              os.path.join(ROOT, 'tools', 'convert_osediff.py'))
convert_osediff = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert_osediff)

# SD 2.1-base's UNet traits at tiny size: linear proj_in/proj_out, per-block head counts,
# a GELU text encoder.
TINY_SD21_UNET = dict(arch_entry('tiny_unet'), use_linear_projection=True,
                      attention_head_dim=(2, 2, 4, 4))
TINY_SD21_TEXT = dict(arch_entry('tiny_text_encoder'), hidden_act='gelu')
# OSEDiff's pattern lists (its osediff.py builds target names from them by substring match).
UNET_PATTERNS = ['to_k', 'to_q', 'to_v', 'to_out.0', 'conv', 'conv1', 'conv2', 'conv_shortcut',
                 'conv_out', 'proj_in', 'proj_out', 'ff.net.2', 'ff.net.0.proj']
VAE_PATTERNS = ['conv1', 'conv2', 'conv_in', 'conv_shortcut', 'conv', 'conv_out', 'to_k', 'to_q',
                'to_v', 'to_out.0']


def _unet_targets(unet):
    """Three lists of full module names, split by down blocks / up blocks / the rest."""
    lists = dict(encoder=[], decoder=[], others=[])
    for name, _ in unet.named_parameters():
        if 'bias' in name or 'norm' in name:
            continue
        if any(p in name for p in UNET_PATTERNS):
            part = 'encoder' if 'down_blocks' in name else 'decoder' if 'up_blocks' in name else 'others'
            lists[part].append(name[:-len('.weight')])
    return lists


def _vae_targets(vae):
    names = []
    for name, _ in vae.named_parameters():
        if 'bias' in name or 'norm' in name:
            continue
        if ('encoder' in name and any(p in name for p in VAE_PATTERNS)) or (
                'quant_conv' in name and 'post_quant_conv' not in name):
            names.append(name[:-len('.weight')])
    return names


@pytest.fixture(scope='module')
def sd21_folder(tmp_path_factory):
    """A tiny SD-2.1-like base on disk."""
    from icmsr.registry import MODELS
    import icmsr.models  # noqa: F401
    root = tmp_path_factory.mktemp('tiny_sd21')
    torch.manual_seed(2)
    parts = dict(unet=dict(type='SDUNet', from_config=TINY_SD21_UNET),
                 vae=dict(type='SDVAE', from_config=arch_entry('tiny_vae')),
                 text_encoder=dict(type='SDTextEncoder', from_config=TINY_SD21_TEXT),
                 tokenizer=dict(type='SDTokenizer',
                                from_pretrained=os.path.join(ROOT, 'configs', 'tiny_base')),
                 scheduler=dict(type='SDScheduler', from_config=arch_entry('sd14_scheduler')))
    for key, cfg in parts.items():
        MODELS.build(cfg).save_pretrained(str(root / key))
    return str(root)


@pytest.fixture(scope='module')
def osediff(sd21_folder, tmp_path_factory):
    """OSEDiff's model built with peft the way its code does, random trained tensors, and its
    checkpoint saved in its layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from peft import LoraConfig
    unet = UNet2DConditionModel.from_pretrained(os.path.join(sd21_folder, 'unet'))
    vae = AutoencoderKL.from_pretrained(os.path.join(sd21_folder, 'vae'))
    lists = _unet_targets(unet)
    assert 'conv_in' in lists['others']  # 'conv' matches it: conv_in has LoRA and is trained too
    rank = 4
    for part, names in lists.items():
        unet.add_adapter(LoraConfig(r=rank, init_lora_weights='gaussian', target_modules=names),
                         adapter_name=f'default_{part}')
    unet.set_adapter(['default_encoder', 'default_decoder', 'default_others'])
    vae_names = _vae_targets(vae)
    vae.add_adapter(LoraConfig(r=rank, init_lora_weights='gaussian', target_modules=vae_names),
                    adapter_name='default_encoder')
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for model in (unet, vae):
            for name, p in model.named_parameters():
                if 'lora' in name or (model is unet and 'conv_in' in name):
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
    ckpt = dict(
        vae_lora_encoder_modules=vae_names, rank_vae=rank,
        state_dict_vae={k: v for k, v in vae.state_dict().items() if 'lora' in k},
        unet_lora_encoder_modules=lists['encoder'], unet_lora_decoder_modules=lists['decoder'],
        unet_lora_others_modules=lists['others'], rank_unet=rank,
        state_dict_unet={k: v for k, v in unet.state_dict().items() if 'lora' in k or 'conv_in' in k})
    assert 'conv_in.base_layer.weight' in ckpt['state_dict_unet']
    path = str(tmp_path_factory.mktemp('osediff') / 'osediff.pkl')
    torch.save(ckpt, path)
    return unet.eval(), vae.eval(), path


def _reference(osediff, sd21_folder, lq01):
    """OSEDiff's forward: VAE posterior (mode), UNet at t=999, diffusers' DDPM x0, decode, clamp."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer
    unet, vae, _ = osediff
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(sd21_folder, 'tokenizer'))
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(sd21_folder, 'text_encoder'))
    scheduler = DDPMScheduler.from_pretrained(os.path.join(sd21_folder, 'scheduler'))
    ids = tokenizer('', max_length=tokenizer.model_max_length, padding='max_length',
                    truncation=True, return_tensors='pt').input_ids
    t = torch.tensor([999])
    with torch.no_grad():
        embeds = text_encoder(ids)[0]
        z = vae.encode(lq01 * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
        eps = unet(z, t, encoder_hidden_states=embeds).sample
        # OSEDiff takes prev_sample of a 1-step schedule (alpha_prev = 1), which is this x0.
        z0 = scheduler.step(eps, t, z, return_dict=True).pred_original_sample
        img = vae.decode(z0 / vae.config.scaling_factor).sample.clamp(-1, 1)
    return (img + 1) / 2


def _model_cfg(sd21_folder):
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'osediff_sd21.py')).model.to_dict()
    cfg = copy.deepcopy(cfg)
    for key in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        cfg[key]['from_pretrained'] = sd21_folder
    return cfg


def test_converted_model_equals_osediff(osediff, sd21_folder, tmp_path):
    from icmsr.apis import ICMSRPipeline, init_model
    out = str(tmp_path / 'export')
    files = convert_osediff.convert(osediff[2], out, _model_cfg(sd21_folder))
    assert {'unet', 'vae', 'conv_in', 'meta', 'diffusers_lora', 'checkpoint'} <= set(files)
    lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ref = _reference(osediff, sd21_folder, lq)
    model = init_model(None, out, fuse=False, device='cpu')
    ours = model.super_resolve(lq, [''], output_size=(64, 64), color_fix='none')
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()
    assert not torch.allclose(ours, ref.flip(-1), atol=1e-2)  # the comparison can fail
    # The same model through the checkpoint (tools/test.py) and the diffusers pipeline.
    from_pth = init_model(_model_cfg(sd21_folder), files['checkpoint'], fuse=False, device='cpu')
    assert torch.equal(from_pth.super_resolve(lq, [''], output_size=(64, 64), color_fix='none'), ours)
    pipe = ICMSRPipeline.from_export(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.sr_model.color_fix == 'adain' and pipe.sr_model.tiles.tile_size == 768


def test_errors_name_the_problem(osediff, sd21_folder, tmp_path):
    ckpt = torch.load(osediff[2], weights_only=True)
    del ckpt['rank_vae']
    bad = str(tmp_path / 'bad.pkl')
    torch.save(ckpt, bad)
    with pytest.raises(convert_osediff.OSEDiffCheckpointError, match=r"\['rank_vae'\] are missing"):
        convert_osediff.convert(bad, str(tmp_path / 'x'), _model_cfg(sd21_folder))
    cfg = _model_cfg(sd21_folder)
    cfg['generator']['unet_lora_targets'] = ('to_q', 'to_k')  # another layer set
    with pytest.raises(convert_osediff.OSEDiffCheckpointError, match='only in the checkpoint'):
        convert_osediff.convert(osediff[2], str(tmp_path / 'y'), cfg)


def test_command_line(osediff, sd21_folder, tmp_path, capsys):
    out = str(tmp_path / 'cli')
    opts = [f'model.{k}.from_pretrained={sd21_folder}'
            for k in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler')]
    assert convert_osediff.main([osediff[2], '--out', out, '--cfg-options', *opts]) == 0
    assert 'pytorch_lora_weights.safetensors' in capsys.readouterr().out
    assert os.path.isfile(os.path.join(out, 'osediff_sd21.pth'))
    # tools/infer.py takes the export as it is (no config): x4 with the config's settings.
    from PIL import Image
    from apis_helpers import write_png
    write_png(str(tmp_path / 'in' / 'a.png'), 12, 16)
    spec = importlib.util.spec_from_file_location('infer_tool', os.path.join(ROOT, 'tools', 'infer.py'))
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    code = infer.main(['--weights', out, '--input', str(tmp_path / 'in'), '--output',
                       str(tmp_path / 'sr'), '--device', 'cpu', '--no-progress'])
    assert code == 0, capsys.readouterr()
    assert Image.open(tmp_path / 'sr' / 'a.png').size == (64, 48)


def test_tools_test_py_runs_the_converted_checkpoint(osediff, sd21_folder, tmp_path):
    """configs/osediff_sd21.py + the converted .pth through tools/test.py (the Runner's test loop)."""
    from apis_helpers import write_png
    from PIL import Image
    files = convert_osediff.convert(osediff[2], str(tmp_path / 'export'), _model_cfg(sd21_folder))
    data = tmp_path / 'pairs'
    gt = write_png(str(data / 'test_HR' / 'a.png'), 64, 64, seed=5)
    os.makedirs(data / 'test_LR')
    Image.fromarray(gt).resize((16, 16), Image.BICUBIC).save(data / 'test_LR' / 'a.png')
    loader = dict(batch_size=1, num_workers=0, persistent_workers=False, drop_last=False,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  dataset=dict(type='PairedImageDataset', data_root=str(data), lq_dir='test_LR',
                               gt_dir='test_HR', pipeline=[
                                   dict(type='LoadImageFromFile', key='lq'),
                                   dict(type='LoadImageFromFile', key='gt'),
                                   dict(type='PackSRInputs', keys=('gt', 'lq'))]))
    config = tmp_path / 'osediff_tiny_test.py'
    config.write_text(f"_base_ = [{os.path.join(ROOT, 'configs', 'osediff_sd21.py')!r}]\n"
                      f'test_dataloader = [{loader!r}]\n'
                      "test_evaluator = [dict(type='IQAMetrics', prefix='Tiny', metric_names=['psnr'])]\n")
    out = tmp_path / 'metrics.json'
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'test.py'), str(config),
                             files['checkpoint'], '--work-dir', str(tmp_path / 'work'), '--out', str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1',
                                     ICMSR_SD21=sd21_folder))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    import json
    metrics = json.load(open(out))
    assert any(k.startswith('Tiny/') for k in metrics), metrics
