"""OneStepGenerator and the role-switched LoRA it relies on."""
import pytest
import torch

from tiny_config import arch_entry as arch
from icmsr.models.backbones import build_scheduler, build_unet
from icmsr.models.diffusion import GENERATOR_ROLE, add_noise, x0_from_eps
from icmsr.models.generator import OneStepGenerator, fuse_generator_lora
from icmsr.models.lora import ALWAYS, LoRARoles, match_targets

from model_testlib import randomize_lora


def _generator(**kwargs):
    torch.manual_seed(0)
    return OneStepGenerator(vae=dict(type='SDVAE', from_config=arch('tiny_vae')),
                            unet=dict(type='SDUNet', from_config=arch('tiny_unet')),
                            scheduler=dict(type='SDScheduler', from_config=arch('sd14_scheduler')),
                            roles=LoRARoles(), **kwargs)


def test_x0_formula_inverts_add_noise_at_999():
    sched = build_scheduler(from_config=arch('sd14_scheduler'))
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 4, 8, 8, generator=g)
    eps = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([999, 999])
    z_t = add_noise(sched, z0, eps, t)
    # The forward process is diffusers' own, bit for bit ...
    assert torch.equal(z_t, sched.add_noise(z0, eps, t))
    # ... and the x0 formula recovers z0 given the true noise (sqrt(abar_999) ~ 0.068).
    assert torch.allclose(x0_from_eps(sched, z_t, eps, t), z0, atol=1e-5)
    t_mid = torch.tensor([20, 500])
    z_mid = add_noise(sched, z0, eps, t_mid)
    assert torch.allclose(x0_from_eps(sched, z_mid, eps, t_mid), z0, atol=1e-5)


def test_stages_compose_and_match_the_formula():
    gen = _generator().eval()
    randomize_lora(gen)
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    embeds = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        img, z0 = gen(lq, embeds)
        z_l = gen.encode(lq)
        # Independent: posterior mode * scaling, UNet+LoRA at t=999, x0 formula.
        expect_zl = gen.vae.encode(lq).latent_dist.mode() * 0.18215
        with gen.roles.use(GENERATOR_ROLE):
            eps = gen.unet(z_l, torch.tensor([999]), encoder_hidden_states=embeds).sample
        abar = gen.scheduler.alphas_cumprod[999]
        expect_z0 = (z_l - (1 - abar).sqrt() * eps) / abar.sqrt()
        img2, _ = gen(lq, embeds)
    assert torch.allclose(z_l, expect_zl, atol=1e-6)
    assert torch.allclose(z0, expect_z0, atol=1e-5)
    assert torch.equal(img, gen.decode(z0))
    assert torch.equal(img, img2), 'inference must be deterministic'
    assert img.shape == (1, 3, 64, 64) and img.min() >= -1 and img.max() <= 1


def test_training_samples_the_posterior_inference_takes_the_mode():
    gen = _generator()
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = gen.encode(lq), gen.encode(lq)
        gen.eval()
        c, d = gen.encode(lq), gen.encode(lq)
    assert not torch.equal(a, b)
    assert torch.equal(c, d)


def test_vae_lora_targets_only_the_encoder():
    gen = _generator()
    names = [k.replace('__', '.') for k in gen.vae_lora.keys()]
    assert names and all(n.startswith('encoder.') or n == 'quant_conv' for n in names)
    assert 'quant_conv' in names and 'encoder.conv_in' in names
    # The short names would have hit the decoder: the regex must avoid that.
    assert any(n.startswith('decoder.') for n in match_targets(gen.vae, ['conv1']))
    unet_names = [k.replace('__', '.') for k in gen.unet_lora.keys()]
    assert 'conv_in' not in unet_names and 'conv_out' in unet_names
    assert any(n.endswith('ff.net.0.proj') for n in unet_names)
    assert any(n.endswith('downsamplers.0.conv') for n in unet_names)


def test_fresh_lora_leaves_outputs_unchanged_and_roles_switch():
    torch.manual_seed(0)
    unet = build_unet(from_config=arch('tiny_unet'))
    x = torch.randn(1, 4, 8, 8)
    c = torch.randn(1, 77, 32)
    t = torch.tensor([500])
    with torch.no_grad():
        base = unet(x, t, encoder_hidden_states=c).sample
    roles = LoRARoles()
    branches = roles.attach(unet, 'a', ['to_q', 'conv1'], rank=4)
    with torch.no_grad(), roles.use('a'):
        assert torch.equal(unet(x, t, encoder_hidden_states=c).sample, base)
    randomize_lora(branches)
    with torch.no_grad():
        with roles.use('a'):
            adapted = unet(x, t, encoder_hidden_states=c).sample
        frozen = unet(x, t, encoder_hidden_states=c).sample
    assert not torch.allclose(adapted, base)
    assert torch.equal(frozen, base)
    assert all(p.requires_grad for p in branches.parameters())
    assert not any(p.requires_grad for p in unet.parameters())
    assert not any('down.weight' in k for k in unet.state_dict()), 'UNet keys must stay clean'


def test_switching_roles_between_forward_and_backward_keeps_generator_grads():
    gen = _generator(train_conv_in=True)
    aux = gen.roles.attach(gen.unet, 'aux', ['to_q', 'to_k'], rank=4)
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    embeds = torch.randn(1, 77, 32)
    img, z0 = gen(lq, embeds)
    with torch.no_grad(), gen.roles.use('aux'):  # a fake-score pass in between
        gen.unet(z0, torch.tensor([500]), encoder_hidden_states=embeds)
    with torch.no_grad(), gen.roles.use(None):  # and a teacher pass
        gen.unet(z0, torch.tensor([500]), encoder_hidden_states=embeds)
    img.mean().backward()
    ups = [p for n, p in gen.named_parameters() if n.endswith('up.weight')]
    assert all(p.grad is not None for p in ups)
    assert sum(p.grad.abs().sum() for p in ups) > 0
    assert gen.conv_in.weight.grad is not None and gen.conv_in.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in aux.parameters())
    assert gen.unet.conv_in.weight.grad is None


def test_trained_conv_in_is_used_only_in_the_generator_role():
    gen = _generator(train_conv_in=True)
    with torch.no_grad():
        gen.conv_in.weight.add_(1.0)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        frozen = gen.unet.conv_in(x)
        with gen.roles.use(GENERATOR_ROLE):
            private = gen.unet.conv_in(x)
    assert torch.allclose(frozen, torch.nn.functional.conv2d(
        x, gen.unet.conv_in.weight, gen.unet.conv_in.bias, padding=1), atol=1e-6)
    assert not torch.allclose(private, frozen)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        gen = _generator(gradient_checkpointing=ckpt, train_latent='mode')
        randomize_lora(gen)
        lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
        img, _ = gen(lq, torch.zeros(1, 77, 32))
        with gen.roles.use(GENERATOR_ROLE):
            img.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in gen.trainable_parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_frozen_base_switches_every_branch_off():
    """roles.frozen_base() runs the frozen weights alone (TSD's HQ latent uses it)."""
    import copy
    gen = _generator().eval()
    randomize_lora(gen)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    plain = copy.deepcopy(gen)
    with torch.no_grad():
        for branches in (plain.unet_lora, plain.vae_lora):
            for b in branches.values():
                b.up.weight.zero_()
        with gen.roles.frozen_base():
            frozen = gen.encode(x)
        assert torch.equal(frozen, plain.encode(x))
        assert not torch.allclose(gen.encode(x), frozen)  # the VAE LoRA acts outside the block


def test_roles_count_and_fusing_refuses_a_unet_shared_with_other_roles():
    gen = _generator(train_conv_in=True)
    assert gen.roles.count(gen.unet) == {GENERATOR_ROLE: len(gen.unet_lora)}
    assert gen.roles.count(gen.vae) == {ALWAYS: len(gen.vae_lora)}
    gen.roles.attach(gen.unet, 'aux', ['to_q'])
    before = gen.unet.conv_in.weight.clone()
    with pytest.raises(RuntimeError, match=r"roles \['aux'\]"):
        fuse_generator_lora(gen)
    assert torch.equal(gen.unet.conv_in.weight, before) and not gen.lora_fused
    # Fusing detaches the branches and the conv_in override, so nothing is counted twice.
    owned = _generator(train_conv_in=True)
    counts = fuse_generator_lora(owned)
    assert counts == dict(unet=len(owned.unet_lora), vae=len(owned.vae_lora), conv_in=1)
    assert owned.roles.count(owned.unet) == {} and owned.roles.count(owned.vae) == {}
    assert owned.roles.override(owned.unet.conv_in, GENERATOR_ROLE, None) is None
