"""The auxiliary (fake-score) model: LoRA targets by OSEDiff's rule, and its noise source."""
import pytest
import torch
import torch.nn.functional as F

from model_testlib import build_tiny, randomize_lora

from icmsr.models.aux_diffusion import AUX_LORA_PRESETS
from icmsr.models.diffusion import add_noise
from icmsr.models.lora import match_targets

# OSEDiff's initialize_unet (osediff.py, cswry/OSEDiff @fcc4f09) greps parameter names
# for these substrings, skipping biases and norms, and files each hit under the first
# matching group: down blocks / conv_in, up blocks / conv_out, everything else.
OSEDIFF_GREP = ['to_k', 'to_q', 'to_v', 'to_out.0', 'conv', 'conv1', 'conv2', 'conv_in',
                'conv_shortcut', 'conv_out', 'proj_out', 'proj_in', 'ff.net.2', 'ff.net.0.proj']


def osediff_rule(unet):
    """(encoder, decoder, others) module names, derived from the names as OSEDiff does."""
    encoder, decoder, others = [], [], []
    for name, _ in unet.named_parameters():
        if 'bias' in name or 'norm' in name:
            continue
        for pattern in OSEDIFF_GREP:
            if pattern in name and ('down_blocks' in name or 'conv_in' in name):
                encoder.append(name.replace('.weight', ''))
                break
            if pattern in name and ('up_blocks' in name or 'conv_out' in name):
                decoder.append(name.replace('.weight', ''))
                break
            if pattern in name:
                others.append(name.replace('.weight', ''))
                break
    return encoder, decoder, others


def _targeted(aux):
    return sorted(key.replace('__', '.') for key in aux.lora.keys())


def test_default_aux_lora_targets_are_osediffs_rule_with_conv_in():
    model = build_tiny('multi')
    encoder, decoder, others = osediff_rule(model.unet)
    assert 'conv_in' in encoder and 'conv_out' in decoder
    assert model.aux_diffusion.lora_preset == 'osediff'
    assert _targeted(model.aux_diffusion) == sorted(encoder + decoder + others)


def test_osediff_effective_preset_is_the_mid_block_only():
    model = build_tiny('multi', aux_diffusion=dict(lora_preset='osediff_effective'))
    _, _, others = osediff_rule(model.unet)
    assert others and all(n.startswith('mid_block.') for n in others)
    # OSEDiff's fake score: only its last adapter ('default_others') is active.
    assert _targeted(model.aux_diffusion) == sorted(others)


def test_presets_on_the_sd_v1_unet_layout():
    """The full-size layout (meta tensors: names only, no memory): 258 layers, 16 in the mid block."""
    from diffusers import UNet2DConditionModel
    with torch.device('meta'):
        unet = UNet2DConditionModel(cross_attention_dim=768)
    encoder, decoder, others = osediff_rule(unet)
    assert len(encoder + decoder + others) == 258 and len(others) == 16
    assert match_targets(unet, AUX_LORA_PRESETS['osediff']) == sorted(encoder + decoder + others)
    assert match_targets(unet, AUX_LORA_PRESETS['osediff_effective']) == sorted(others)
    assert match_targets(unet, AUX_LORA_PRESETS['generator']) == sorted(
        n for n in encoder + decoder + others if n != 'conv_in')


def _aux_setup(**aux):
    model = build_tiny('multi', aux_diffusion=dict(seed=0, **aux))
    model.eval()
    randomize_lora(model.aux_diffusion)
    g = torch.Generator().manual_seed(2)
    z0 = torch.randn(2, 4, 8, 8, generator=g)
    embeds = model.text.encode(['a red car', 'a dog'])
    return model, z0, embeds


def _capture_unet_inputs(unet):
    seen = []
    handle = unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0], args[1])), with_kwargs=True)
    return seen, handle


def test_aux_reuses_the_regularizers_noisy_latents_bitwise():
    model, z0, embeds = _aux_setup(noise_source='regularizer')
    z = z0.clone().requires_grad_(True)
    _, info = model.regularizer(z, embeds, model.text.negative(2), None)
    seen, handle = _capture_unet_inputs(model.unet)
    loss = model.aux_diffusion(z.detach(), embeds, None, reg_info=info)
    handle.remove()
    z_t, t = seen[0]
    assert torch.equal(z_t, info['z_t'].to(z_t.dtype)) and torch.equal(t, info['timesteps'])
    assert not z_t.requires_grad
    # Independent loss: the aux UNet on the same z_t against the regularizer's noise.
    with torch.no_grad(), model.roles.use('aux'):
        eps = model.unet(info['z_t'], info['timesteps'], encoder_hidden_states=embeds).sample
    assert torch.allclose(loss, F.mse_loss(eps, info['noise']), rtol=1e-6, atol=1e-7)
    loss.backward()
    assert all(p.grad is not None for p in model.aux_diffusion.trainable_parameters())
    # A z_t that still carries a graph is detached before use.
    info_grad = dict(info, z_t=info['z_t'].clone().requires_grad_(True))
    seen, handle = _capture_unet_inputs(model.unet)
    model.aux_diffusion(z0, embeds, None, reg_info=info_grad)
    handle.remove()
    assert not seen[0][0].requires_grad


def test_aux_draws_its_own_timesteps_and_noise_by_default():
    model, z0, embeds = _aux_setup()
    assert model.aux_diffusion.noise_source == 'own'
    _, info = model.regularizer(z0, embeds, model.text.negative(2), None)
    seen, handle = _capture_unet_inputs(model.unet)
    model.aux_diffusion(z0, embeds, None, reg_info=info)  # ignored in this mode
    handle.remove()
    z_t, t = seen[0]
    assert not torch.equal(z_t, info['z_t'])
    # Its own seeded draw: z_t = add_noise(z0, eps', t') with t' in [0, 1000).
    t_fixed, eps = torch.tensor([5, 990]), torch.randn(2, 4, 8, 8)
    seen, handle = _capture_unet_inputs(model.unet)
    model.aux_diffusion(z0, embeds, None, timesteps=t_fixed, noise=eps)
    handle.remove()
    assert torch.equal(seen[0][0], add_noise(model.aux_diffusion.scheduler, z0, eps, t_fixed))


def test_aux_noise_source_errors():
    model, z0, embeds = _aux_setup(noise_source='regularizer')
    with pytest.raises(ValueError, match=r'reg_info=info'):
        model.aux_diffusion(z0, embeds, None)
    with pytest.raises(ValueError, match='noise_source must be one of'):
        build_tiny('multi', aux_diffusion=dict(noise_source='fresh'))
    with pytest.raises(ValueError, match='lora_preset must be one of'):
        build_tiny('multi', aux_diffusion=dict(lora_preset='all'))
