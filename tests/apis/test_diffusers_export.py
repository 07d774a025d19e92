"""Export folders that diffusers and peft take as they are: load_lora_weights, peft config, model card."""
import json
import os

import pytest
import torch

from icmsr.apis import export_model, load_export_extras, read_description
from icmsr.models import OneStepSR


@pytest.fixture(scope='module')
def export_dir(trained, pretrained_cfg, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('export'))
    export_model(trained, out, OneStepSR.inference_config(pretrained_cfg),
                 extra=dict(config='configs/icmsr_tiny.py', source_checkpoint='iter_200.pth'),
                 metrics=dict(RealSR=dict(psnr=25.5, lpips=0.29)))
    return out


@pytest.fixture(scope='module')
def sd_base(tiny_sd_folder, tmp_path_factory):
    """A tiny StableDiffusionPipeline folder (model_index.json) made of the tiny SD components."""
    from diffusers import (AutoencoderKL, DDPMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTokenizer
    sub = lambda name: os.path.join(tiny_sd_folder, name)  # noqa: E731
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(sub('vae')), unet=UNet2DConditionModel.from_pretrained(sub('unet')),
        text_encoder=CLIPTextModel.from_pretrained(sub('text_encoder')),
        tokenizer=CLIPTokenizer.from_pretrained(sub('tokenizer')),
        scheduler=DDPMScheduler.from_pretrained(sub('scheduler')), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    folder = str(tmp_path_factory.mktemp('sd_base'))
    pipe.save_pretrained(folder)
    return folder


def _ours_unet(model, x, t, e, with_conv_in):
    gen = model.generator
    override = None if with_conv_in else gen.roles.override(gen.unet.conv_in, 'generator', None)
    try:
        with torch.no_grad(), gen.roles.use('generator'):
            return gen.unet(x, t, encoder_hidden_states=e).sample
    finally:
        if override is not None:
            gen.roles.override(gen.unet.conv_in, 'generator', override)


def test_load_lora_weights_activates_the_unet_lora(trained, export_dir, sd_base):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(sd_base)
    x, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([999])
    e = trained.encode_prompts(['a house'])
    with torch.no_grad():
        plain = pipe.unet(x, t, encoder_hidden_states=e).sample
    pipe.load_lora_weights(export_dir)  # the folder as it is: pytorch_lora_weights.safetensors
    assert pipe.get_active_adapters() and len(pipe.unet.peft_config) == 1
    config = next(iter(pipe.unet.peft_config.values()))
    assert config.r == 4 and config.lora_alpha == 8
    with torch.no_grad():
        theirs = pipe.unet(x, t, encoder_hidden_states=e).sample
    ours = _ours_unet(trained, x, t, e, with_conv_in=False)
    assert not torch.allclose(theirs, plain, atol=1e-3)  # the adapter changes the output...
    assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()  # ...into ours

    # The loader adds the rest of the generator: VAE-encoder LoRA and the trained conv_in.
    assert load_export_extras(pipe, export_dir) == dict(vae_lora=True, conv_in=True)
    with torch.no_grad():
        full = pipe.unet(x, t, encoder_hidden_states=e).sample
        lq = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
        z_theirs = pipe.vae.encode(lq).latent_dist.mode() * pipe.vae.config.scaling_factor
        z_ours = trained.generator.encode(lq)
    assert torch.allclose(full, _ours_unet(trained, x, t, e, with_conv_in=True), atol=1e-5)
    assert torch.allclose(z_theirs, z_ours, atol=1e-5), (z_theirs - z_ours).abs().max()


def test_peft_adapter_config_and_scheduler_config(trained, export_dir, tiny_sd_folder):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    config = LoraConfig.from_pretrained(export_dir)
    meta = read_description(export_dir)
    assert (config.r, config.lora_alpha) == (4, 8)
    assert sorted(config.target_modules) == meta['unet_lora']['targets']
    # peft alone: inject the config, load the weights (prefix dropped), same UNet output.
    unet = UNet2DConditionModel.from_pretrained(os.path.join(tiny_sd_folder, 'unet'))
    inject_adapter_in_model(config, unet, adapter_name='default')
    state = {k.removeprefix('unet.'): v
             for k, v in load_file(os.path.join(export_dir, 'pytorch_lora_weights.safetensors')).items()}
    result = set_peft_model_state_dict(unet, state, adapter_name='default')
    assert not result.unexpected_keys
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([999])
    e = trained.encode_prompts([''])
    with torch.no_grad():
        theirs = unet(x, t, encoder_hidden_states=e).sample
    assert torch.allclose(theirs, _ours_unet(trained, x, t, e, with_conv_in=False), atol=1e-5)
    scheduler = DDPMScheduler.from_config(meta['scheduler'])
    assert torch.equal(scheduler.alphas_cumprod, trained.scheduler.alphas_cumprod)


def test_model_card(export_dir, tiny_sd_folder, trained):
    card = open(os.path.join(export_dir, 'README.md')).read()
    assert card.startswith('---\nlibrary_name: diffusers\n')
    assert f'- unet: `{tiny_sd_folder}/unet`\n' in card
    assert '| unet | `unet_lora.safetensors` (diffusers: `pytorch_lora_weights.safetensors`) | 4 | 8 |' in card
    assert '- config: `configs/icmsr_tiny.py`' in card
    assert '| RealSR | psnr | 25.5 |' in card and '| RealSR | lpips | 0.29 |' in card
    assert trained.base_fingerprint['unet']['digest'] in card
    model_json = card.split('## Model config\n\n```json\n')[1].split('```')[0]
    assert json.loads(model_json) == read_description(export_dir)['model']
