"""The TSD regularizer: VSD + TSM gradients, the VSD special case, TSM's direction, DASM draws."""
import copy
import os.path as osp
import warnings

import pytest
import torch
from mmengine.config import Config

from model_testlib import build_tiny, hq_batch, randomize_lora

from icmsr.models import TSDRegularizer, VSDRegularizer
from icmsr.registry import MODELS
from icmsr.utils.setup_env import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CFG = 7.5


@pytest.fixture(scope='module')
def text_model():
    """A tiny text-only model whose shared UNet serves as teacher and fake score."""
    model = build_tiny(None)
    model.eval()
    randomize_lora(model.aux_diffusion)
    return model


def _reg(model, cls=TSDRegularizer, **kwargs):
    kwargs.setdefault('cfg_scale', CFG)
    return cls(teacher_unet=model.unet, scheduler=model.regularizer.scheduler, roles=model.roles,
               **kwargs)


def _uniform_pvalue(counts):
    """Pearson's chi-square test of equal bin counts: P(chi2_{n-1} >= statistic)."""
    counts = counts.double()
    expected = counts.sum() / len(counts)
    stat = ((counts - expected) ** 2 / expected).sum()
    return float(torch.special.gammaincc(torch.tensor((len(counts) - 1) / 2.0), stat / 2))


def _inputs(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(2, 4, 8, 8, generator=g)
    z_hq = torch.randn(2, 4, 8, 8, generator=g)
    eps = torch.randn(2, 4, 8, 8, generator=g)
    return z0, z_hq, eps, model.text.encode(['a red car', 'a dog']), model.text.negative(2)


# ------------------------------------------------------------ independent maths
def _ab(model, t):
    abar = model.regularizer.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    return abar.sqrt(), (1 - abar).sqrt()


def _teacher(model, x, t, embeds, neg):
    with torch.no_grad(), model.roles.use(None):
        e_u = model.unet(x, t, encoder_hidden_states=neg).sample
        e_c = model.unet(x, t, encoder_hidden_states=embeds).sample
    return e_u + CFG * (e_c - e_u)


def _fake(model, x, t, embeds):
    with torch.no_grad(), model.roles.use('aux'):
        return model.unet(x, t, encoder_hidden_states=embeds).sample


def _term(form, model, z0, x, t, e_real, e_other):
    """The per-step gradient written out: x0 form (OSEDiff) or eps form, uniform weight."""
    a, b = _ab(model, t)
    if form == 'eps':
        return e_real - e_other
    x0_real, x0_other = (x - b * e_real) / a, (x - b * e_other) / a
    return (x0_other - x0_real) / (z0 - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)


def _tsd_by_hand(form, model, z0, z_hq, eps, embeds, neg, traj, weights):
    """Both terms summed over the trajectory; DDIM steps written out."""
    a, b = _ab(model, traj[:, 0])
    x, h = a * z0 + b * eps, a * z_hq + b * eps
    vsd = tsm = 0
    for k, w in enumerate(weights):
        t = traj[:, k]
        e_real, e_hq = _teacher(model, x, t, embeds, neg), _teacher(model, h, t, embeds, neg)
        e_fake = _fake(model, x, t, embeds)
        vsd = vsd + w * _term(form, model, z0, x, t, e_real, e_fake)
        tsm = tsm + w * _term(form, model, z0, x, t, e_real, e_hq)
        (a, b), (a2, b2) = _ab(model, t), _ab(model, traj[:, k + 1])
        x = a2 * (x - b * e_fake) / a + b2 * e_fake
        h = a2 * (h - b * e_hq) / a + b2 * e_hq
    return vsd, tsm


@pytest.mark.parametrize('form', ['x0', 'eps'])
def test_each_term_matches_an_independent_recomputation(text_model, form):
    model = text_model
    z0, z_hq, eps, embeds, neg = _inputs(model)
    reg = _reg(model, grad_form=form, tsm_weight=0.3,
               dasm=dict(steps=3, stride=50, step_weights=(1.0, 0.3, 0.3), jitter=False))
    t0 = torch.tensor([300, 120])
    traj = reg.trajectory(t0)
    assert traj.tolist() == [[300, 250, 200, 150], [120, 80, 40, 0]]
    z = z0.clone().requires_grad_(True)
    loss, info = reg(z, embeds, neg, None, timesteps=t0, noise=eps, target_z0=z_hq)
    loss.backward()
    vsd, tsm = _tsd_by_hand(form, model, z0, z_hq, eps, embeds, neg, traj, (1.0, 0.3, 0.3))
    assert torch.allclose(info['grad_vsd'], vsd, atol=1e-4, rtol=1e-4)
    assert torch.allclose(info['grad_tsm'], tsm, atol=1e-4, rtol=1e-4)
    total = 0.7 * vsd + 0.3 * tsm
    assert torch.allclose(z.grad, 2 * total / z0.numel(), atol=1e-6, rtol=1e-4)
    assert not torch.allclose(vsd, tsm, atol=1e-3)  # the two terms are different signals


@pytest.mark.parametrize('form', ['x0', 'eps'])
def test_tsm_weight_zero_without_dasm_is_vsd_bit_for_bit(text_model, form):
    model = text_model
    z0, *_, embeds, neg = _inputs(model)
    out = []
    for cls, extra in ((VSDRegularizer, {}), (TSDRegularizer, dict(tsm_weight=0.0, dasm=None))):
        reg = _reg(model, cls, grad_form=form, eps_weighting='sigma2', seed=7, **extra)
        z = z0.clone().requires_grad_(True)
        loss, info = reg(z, embeds, neg, None)  # seeded t and eps draws, no HQ latent needed
        loss.backward()
        out.append((loss, z.grad, info))
    (l_v, g_v, i_v), (l_t, g_t, i_t) = out
    assert torch.equal(i_v['timesteps'], i_t['timesteps']) and torch.equal(i_v['noise'], i_t['noise'])
    assert torch.equal(l_v, l_t) and torch.equal(g_v, g_t) and torch.equal(i_v['grad'], i_t['grad'])
    assert i_t['grad_tsm'] is None


@pytest.mark.parametrize('form', ['x0', 'eps'])
def test_descent_on_tsm_alone_moves_the_latent_to_the_hq_latent(text_model, form):
    model = text_model
    z0, z_hq, eps, embeds, neg = _inputs(model)
    reg = _reg(model, grad_form=form, tsm_weight=1.0)

    def oracle(z_t, t, c, n, f):
        # The exact noise prediction of a teacher whose data is the HQ latent itself.
        a, b = _ab(model, t)
        return (z_t - a * torch.cat([z_hq] * (z_t.shape[0] // z_hq.shape[0]))) / b

    reg.teacher_eps = oracle
    t = torch.tensor([400, 700])
    z = z0.clone().requires_grad_(True)
    loss, info = reg(z, embeds, neg, None, timesteps=t, noise=eps, target_z0=z_hq)
    loss.backward()
    step = -z.grad
    # The step points straight at the HQ latent (cosine 1 per sample) ...
    cos = torch.nn.functional.cosine_similarity(step.flatten(1), (z_hq - z0).flatten(1))
    assert torch.allclose(cos, torch.ones(2), atol=1e-5)
    before = (z0 - z_hq).norm()
    assert (z0 + 0.1 * z0.numel() * step - z_hq).norm() < before
    assert (z0 - 0.1 * z0.numel() * step - z_hq).norm() > before  # the opposite sign recedes


def test_dasm_draws_follow_tsd_sr(text_model):
    n = 4000
    reg = _reg(text_model, t_range=(50, 950), seed=11,
               dasm=dict(steps=4, stride=50, step_weights=(1.0, 0.3, 0.3, 0.3), jitter=True))
    start, _ = reg.draw(torch.zeros(n, 1, 1, 1))
    traj = reg.trajectory(start)
    # The same seeded stream, drawn by hand: t0 ~ U[50, 950), eps, then the jitter in [-25, 25).
    g = torch.Generator().manual_seed(11)
    t0 = torch.randint(50, 950, (n, ), generator=g)
    torch.randn((n, 1, 1, 1), generator=g)
    bias = torch.randint(-25, 25, (n, ), generator=g)
    assert torch.equal(start, t0)
    # TSD-SR's own construction in timestep-index space (index 0 = noisiest, 999 = cleanest).
    for i in range(n):
        u0 = 999 - int(t0[i])
        right = min(u0 + 50 * 4 + int(bias[i]), 999)
        expect = 999 - torch.linspace(u0, right, 5).long()
        assert torch.equal(traj[i], expect), (i, traj[i], expect)
    # Statistics of the draws: uniform start over 9 bins, uniform jitter over 5 bins.
    assert _uniform_pvalue(torch.bincount((t0 - 50) // 100, minlength=9)) > 1e-3
    assert _uniform_pvalue(torch.bincount((bias + 25) // 10, minlength=5)) > 1e-3
    assert start.min() >= 50 and start.max() <= 949
    assert _uniform_pvalue(torch.tensor([400, 100, 100, 100])) < 1e-3  # the test can reject
    # Away from t = 0 the points are (200 + bias) / 4 apart, towards low noise; near t = 0
    # the span shrinks to t0, never below 0.
    far = t0 >= 225
    steps = traj[far, :4].diff(dim=1)
    assert torch.all((steps <= -43) & (steps >= -57))
    assert torch.all(traj[:, :4].diff(dim=1) <= 0) and traj.min() >= 0
    assert torch.all(traj[t0 < 175, 4] == 0)
    # Without the jitter the stride is exactly 50.
    reg.dasm['jitter'] = False
    assert torch.all(reg.trajectory(t0[far])[:, :4].diff(dim=1) == -50)


def test_missing_hq_latent_and_bad_settings_are_named(text_model):
    model = text_model
    z0, *_, embeds, neg = _inputs(model)
    with pytest.raises(ValueError, match='target_z0'):
        _reg(model, tsm_weight=0.3)(z0, embeds, neg, None)
    with pytest.raises(KeyError, match='strides'):
        _reg(model, dasm=dict(strides=3))
    with pytest.raises(ValueError, match='one weight per step'):
        _reg(model, dasm=dict(steps=2))
    with pytest.raises(ValueError, match='tsm_weight'):
        _reg(model, tsm_weight=1.5)


def _tiny(name):
    """A config with the SD and adapter parts swapped for configs/icmsr_tiny.py's (as the config test)."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    tiny = Config.fromfile(osp.join(ROOT, 'configs', 'icmsr_tiny.py'))
    model = copy.deepcopy(cfg.model.to_dict())
    for key in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler', 'lpips', 'text'):
        model[key] = copy.deepcopy(tiny.model[key].to_dict())
    if model.get('condition') is not None:
        model['condition'] = copy.deepcopy(tiny.model.condition.to_dict())
    model['degradation']['kernel_sizes'] = (7, 9, 11)
    return cfg, model


@pytest.mark.parametrize('name', ['tsdsr.py', 'icmsr_multi_tsd.py'])
def test_train_step_with_tsd_configs_trains_only_the_loras(name):
    from mmengine.optim import build_optim_wrapper

    register_all_modules()
    cfg, model_cfg = _tiny(name)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(model_cfg)
    reg = model.regularizer
    assert isinstance(reg, TSDRegularizer) and reg.needs_target and reg.dasm is not None
    assert (model.condition is None) == (name == 'tsdsr.py') and reg.t_range == (50, 950)
    optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))

    # train_step hands the regulariser the HQ latent of the batch, from the frozen encoder.
    seen = {}
    regularize, targets = reg.forward, model._regularizer_targets

    def keep_target(gt):
        seen['target'] = targets(gt)
        return seen['target']

    def keep_info(z0, *args, **kwargs):
        loss, seen['info'] = regularize(z0, *args, **kwargs)
        seen['kwargs'] = kwargs
        return loss, seen['info']

    model._regularizer_targets, reg.forward = keep_target, keep_info
    trainable = {id(p) for group in model.trainable_groups().values() for p in group}
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    log = model.train_step(hq_batch(batch=1), optim)
    assert all(torch.isfinite(v) for v in log.values()) and 'loss_reg' in log
    assert seen['info']['trajectory'].shape == (1, 5) and seen['info']['grad_tsm'] is not None
    assert seen['kwargs']['target_z0'] is seen['target']['target_z0']
    assert seen['target']['target_z0'].shape == (1, 4, 8, 8)
    params = dict(model.named_parameters())
    changed = {k for k, p in params.items() if not torch.equal(p, before[k])}
    assert changed <= {k for k, p in params.items() if id(p) in trainable}
    assert any(k.startswith('generator.') for k in changed)
    assert any(k.startswith('aux_diffusion.') for k in changed)
    frozen = [k for k, p in params.items() if id(p) not in trainable]
    assert frozen and all(torch.equal(params[k], before[k]) for k in frozen)
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
