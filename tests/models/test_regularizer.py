"""The ICM regularizer and the teacher condition: formula, sign, CFG, adapters, timestep ranges."""

import torch

from model_testlib import build_tiny, randomize_lora

from icmsr.models.diffusion import cfg_combine


def _setup(seed=0):
    model = build_tiny('multi', regularizer=dict(cfg_scale=7.5, seed=seed))
    model.eval()
    randomize_lora(model.aux_diffusion)
    randomize_lora(model.generator, seed=4)
    g = torch.Generator().manual_seed(5)
    z0 = torch.randn(2, 4, 8, 8, generator=g)
    embeds = model.text.encode(['a red car', 'a dog'])
    neg = model.text.negative(2)
    cond = [torch.rand(2, 3, 64, 64, generator=g), (torch.rand(2, 1, 64, 64, generator=g) > 0.8).float()]
    return model, z0, embeds, neg, cond


def _osediff_vsd(model, z0, embeds, neg, t, eps, feats=None):
    """Independent text-only OSEDiff VSD (x0 form), straight from the UNet."""
    unet, roles, abar = model.unet, model.roles, model.regularizer.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
    with torch.no_grad():
        with roles.use('aux'):
            e_fake = unet(z_t, t, encoder_hidden_states=embeds).sample
        with roles.use(None):
            e_u = unet(z_t, t, encoder_hidden_states=neg).sample
            e_c = unet(z_t, t, encoder_hidden_states=embeds).sample
    e_real = e_u + 7.5 * (e_c - e_u)
    x0_real = (z_t - (1 - abar).sqrt() * e_real) / abar.sqrt()
    x0_fake = (z_t - (1 - abar).sqrt() * e_fake) / abar.sqrt()
    weight = (z0 - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
    return (x0_fake - x0_real) / weight, x0_real


def test_gradient_wrt_z0_is_the_x0_form_formula():
    model, z0, embeds, neg, _ = _setup()
    t = torch.tensor([300, 700])
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))
    z = z0.clone().requires_grad_(True)
    loss, info = model.regularizer(z, embeds, neg, None, timesteps=t, noise=eps)
    loss.backward()
    g, _ = _osediff_vsd(model, z0, embeds, neg, t, eps)
    # mse mean reduction: dL/dz0 = 2 g / numel
    assert torch.allclose(z.grad, 2 * g / z0.numel(), atol=1e-6, rtol=1e-4)
    assert torch.allclose(info['grad'], g, atol=1e-5, rtol=1e-4)


def test_adapter_scale_zero_is_bitwise_text_only_vsd():
    model, z0, embeds, neg, cond = _setup()
    t = torch.tensor([100, 900])
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))
    grads = []
    for scale, c in ((0.0, cond), (None, None)):
        if scale is not None:
            model.condition.scale = scale
        feats = model.condition.features(c)
        z = z0.clone().requires_grad_(True)
        loss, _ = model.regularizer(z, embeds, neg, feats, timesteps=t, noise=eps)
        loss.backward()
        grads.append(z.grad)
    assert torch.equal(grads[0], grads[1])
    # ... and the adapter does matter at scale 1.
    model.condition.scale = 1.0
    z = z0.clone().requires_grad_(True)
    model.regularizer(z, embeds, neg, model.condition.features(cond),
                      timesteps=t, noise=eps)[0].backward()
    assert not torch.allclose(z.grad, grads[0])


def test_descent_moves_z0_towards_the_teacher():
    model, z0, embeds, neg, cond = _setup()
    feats = model.condition.features(cond)
    t = torch.tensor([400, 600])
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))
    # A perfect fake score (it knows the noise, Lemma 1) makes x0_fake == z0.
    model.regularizer.fake_eps = lambda z_t, tt, c, f: eps
    z = z0.clone().requires_grad_(True)
    loss, info = model.regularizer(z, embeds, neg, feats, timesteps=t, noise=eps)
    assert torch.allclose(info['x0_fake'], z0, atol=1e-4)
    loss.backward()
    lr = 0.1 * z0.numel()
    stepped = z0 - lr * z.grad
    before = (z0 - info['x0_real']).norm()
    after = (stepped - info['x0_real']).norm()
    assert after < before
    # The paper's printed sign (eps_fake - eps_real) would move away instead.
    wrong = z0 + lr * z.grad
    assert (wrong - info['x0_real']).norm() > before


def test_teacher_is_cfg_of_adapter_conditioned_frozen_unet():
    model, z0, embeds, neg, cond = _setup()
    reg = model.regularizer
    feats = model.condition.features(cond)
    t = torch.tensor([250, 750])
    z_t = torch.randn(z0.shape)
    got = reg.teacher_eps(z_t, t, embeds, neg, feats)
    with torch.no_grad(), model.roles.use(None):
        e_u = model.unet(z_t, t, encoder_hidden_states=neg,
                         down_intrablock_additional_residuals=[f.clone() for f in feats]).sample
        e_c = model.unet(z_t, t, encoder_hidden_states=embeds,
                         down_intrablock_additional_residuals=[f.clone() for f in feats]).sample
    assert torch.allclose(got, e_u + 7.5 * (e_c - e_u), atol=1e-4)
    assert torch.equal(cfg_combine(e_u, e_c, 7.5), e_u + 7.5 * (e_c - e_u))
    assert all(f.shape[0] == 2 for f in feats), 'caller features must not be consumed'


def test_fake_score_gets_adapter_features_unless_disabled():
    model, z0, embeds, neg, cond = _setup()
    reg = model.regularizer
    feats = model.condition.features(cond)
    seen = []
    hook = model.unet.register_forward_pre_hook(
        # Record the length now: the UNet pops the list while it runs.
        lambda m, a, kw: seen.append((model.roles.active, None if kw.get(
            'down_intrablock_additional_residuals') is None else len(
                kw['down_intrablock_additional_residuals']))),
        with_kwargs=True)
    try:
        t = torch.tensor([500, 500])
        reg.fake_eps(torch.randn(z0.shape), t, embeds, feats)
        reg.fake_uses_adapter = False
        reg.fake_eps(torch.randn(z0.shape), t, embeds, feats)
    finally:
        hook.remove()
    assert seen[0] == ('aux', 4)
    assert seen[1] == ('aux', None)


def test_multi_adapter_is_weighted_sum_of_single_adapters():
    model, _, _, _, cond = _setup()
    condition = model.condition
    condition.weights = [0.7, 0.4]
    condition.scale = 1.5
    feats = condition.features(cond)
    color, canny = condition.adapter.adapters
    with torch.no_grad():
        fc, fe = color(cond[0]), canny(cond[1])
    assert len(feats) == len(fc) == 4
    for f, a, b in zip(feats, fc, fe):
        assert torch.allclose(f, 1.5 * (0.7 * a + 0.4 * b), atol=1e-5)


def test_regularizer_timesteps_in_20_980_and_seedable():
    model, z0, embeds, neg, _ = _setup(seed=123)
    reg = model.regularizer
    reg.fake_eps = lambda z_t, t, c, f: torch.zeros_like(z_t)
    reg.teacher_eps = lambda z_t, t, c, n, f: torch.zeros_like(z_t)
    draws = torch.cat([reg(torch.zeros(64, 4, 2, 2), embeds[:1].expand(64, -1, -1),
                           neg[:1].expand(64, -1, -1))[1]['timesteps'] for _ in range(20)])
    assert draws.min() >= 20 and draws.max() <= 979
    assert draws.min() < 40 and draws.max() > 960  # covers the range
    model2, *_ = _setup(seed=123)
    model2.regularizer.fake_eps, model2.regularizer.teacher_eps = reg.fake_eps, reg.teacher_eps
    first = model2.regularizer(torch.zeros(64, 4, 2, 2), embeds[:1].expand(64, -1, -1),
                               neg[:1].expand(64, -1, -1))[1]['timesteps']
    assert torch.equal(first, draws[:64])


def test_eps_form_has_eq3_sign():
    model, z0, embeds, neg, _ = _setup()
    reg = model.regularizer
    reg.grad_form = 'eps'
    t = torch.tensor([300, 700])
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(9))
    _, info = reg(z0, embeds, neg, None, timesteps=t, noise=eps)
    e_real = reg.teacher_eps(info['z_t'], t, embeds, neg, None)
    e_fake = reg.fake_eps(info['z_t'], t, embeds, None)
    assert torch.allclose(info['grad'], e_real - e_fake, atol=1e-5)
