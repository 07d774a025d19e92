"""ICMSR end to end: one train step, aux loss, memory layout, checkpoints, prediction."""
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.runner.checkpoint import get_state_dict, load_state_dict

from model_testlib import build_tiny, hq_batch

from tiny_config import arch_entry
from icmsr.models.base_fingerprint import fingerprint_from_state
from icmsr.structures import SRDataSample

OPTIM = dict(constructor='ICMSROptimWrapperConstructor',
             generator=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3),
                            clip_grad=dict(max_norm=1.0)),
             aux_diffusion=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)))


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params):
    return [not torch.equal(b, p.detach()) for b, p in zip(before, params)]


def test_one_train_step_updates_exactly_the_trainable_parts():
    model = build_tiny('multi', generator=dict(train_conv_in=True))
    model.train()
    ow = build_optim_wrapper(model, OPTIM)
    groups = model.trainable_groups()
    gen, aux = groups['generator'], groups['aux_diffusion']
    ids = {id(p) for p in gen + aux}
    frozen = [p for p in model.parameters() if id(p) not in ids]
    assert frozen and not any(p.requires_grad for p in frozen)
    frozen_before = _snapshot(frozen)
    gen_before, aux_before = _snapshot(gen), _snapshot(aux)
    vae_lora = list(model.generator.vae_lora.parameters())
    unet_lora = list(model.generator.unet_lora.parameters())
    vae_before, unet_before = _snapshot(vae_lora), _snapshot(unet_lora)
    # Spy on the generator's grads right after its backward (before zero_grad).
    grads = {}
    step = ow['generator'].step

    def spy_step(**kwargs):
        grads['unet'] = [p.grad.clone() for p in model.generator.unet_lora.parameters()]
        grads['vae'] = [p.grad.clone() for p in model.generator.vae_lora.parameters()]
        grads['aux'] = [p.grad for p in aux]
        step(**kwargs)
        grads['aux_after_gen'] = _changed(aux_before, aux)
    ow['generator'].step = spy_step
    aux_step = ow['aux_diffusion'].step

    def spy_aux_step(**kwargs):
        grads['gen_grads_at_aux'] = [p.grad for p in gen]
        aux_step(**kwargs)
    ow['aux_diffusion'].step = spy_aux_step

    log = model.train_step(hq_batch(), ow)
    assert set(log) == {'loss', 'loss_l2', 'loss_lpips', 'loss_reg', 'loss_aux'}
    assert all(torch.isfinite(v) for v in log.values())
    # Generator LoRA (UNet and VAE encoder) had non-zero grads and changed.
    assert sum(g.abs().sum() for g in grads['unet']) > 0
    assert sum(g.abs().sum() for g in grads['vae']) > 0
    gen_changed = _changed(gen_before, gen)
    assert sum(gen_changed) >= len(gen) // 2  # 'down' halves of fresh LoRA get 0 grad
    assert any(_changed(vae_before, vae_lora)) and any(_changed(unet_before, unet_lora))
    assert _changed([gen_before[-2]], [model.generator.conv_in.weight]) == [True]
    # The generator update did not touch aux; the aux update changed aux only.
    assert all(g is None for g in grads['aux']) and not any(grads['aux_after_gen'])
    assert all(g is None or not g.abs().sum() for g in grads['gen_grads_at_aux'])
    assert any(_changed(aux_before, aux))
    # Every frozen weight (UNet, VAE decoder, text encoder, adapters, LPIPS) is bitwise the same.
    assert not any(_changed(frozen_before, frozen))


def test_aux_loss_sees_adapter_features_only_with_the_option():
    for use_adapter, expect in ((False, None), (True, 4)):
        model = build_tiny('color', aux_diffusion=dict(use_adapter=use_adapter, seed=0))
        seen = []
        hook = model.unet.register_forward_pre_hook(
            lambda m, a, kw: seen.append(None if kw.get('down_intrablock_additional_residuals')
                                         is None else len(kw['down_intrablock_additional_residuals'])),
            with_kwargs=True)
        cond = torch.rand(2, 3, 64, 64)
        feats = model.condition.features(cond)
        model.aux_diffusion(torch.randn(2, 4, 8, 8), model.text.encode(['a', 'b']), feats)
        hook.remove()
        assert seen == [expect]


def test_aux_timesteps_in_0_1000_and_loss_matches_definition():
    model = build_tiny(None, aux_diffusion=dict(seed=7))
    aux = model.aux_diffusion
    captured = []
    hook = model.unet.register_forward_pre_hook(lambda m, a, kw: captured.append(a[1].clone()),
                                                with_kwargs=True)
    embeds = model.text.encode([''] * 256)
    with torch.no_grad():
        for _ in range(2):
            aux(torch.randn(256, 4, 1, 1), embeds)
    hook.remove()
    t = torch.cat(captured)
    assert t.min() >= 0 and t.max() <= 999 and t.min() < 10 and t.max() > 990
    z0 = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 990])
    eps = torch.randn(2, 4, 8, 8)
    loss = aux(z0, embeds[:2], timesteps=t, noise=eps)
    abar = aux.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad(), model.roles.use('aux'):
        pred = model.unet(abar.sqrt() * z0 + (1 - abar).sqrt() * eps, t,
                          encoder_hidden_states=embeds[:2]).sample
    assert torch.allclose(loss, ((pred - eps) ** 2).mean(), atol=1e-6)


def test_base_unet_weights_are_stored_once():
    model = build_tiny('multi', generator=dict(train_conv_in=True))
    unet_storages = {p.untyped_storage().data_ptr() for p in model.unet.parameters()}
    all_storages = [p.untyped_storage().data_ptr() for p in model.parameters()]
    unet_numel = sum(p.numel() for p in model.unet.parameters())
    # Each UNet weight appears exactly once among the model's parameters ...
    assert sum(ptr in unet_storages for ptr in all_storages) == len(unet_storages)
    # ... and generator, teacher and fake score all run that same module.
    assert model.generator.unet is model.unet
    assert model.regularizer.teacher_unet is model.unet and model.regularizer.fake_unet is model.unet
    assert model.aux_diffusion.unet is model.unet
    naive = build_tiny('multi', share_unet=False, generator=dict(train_conv_in=True))
    naive_numel = sum(p.numel() for p in naive.parameters())
    shared_numel = sum(p.numel() for p in model.parameters())
    assert naive_numel - shared_numel == 2 * unet_numel


def test_checkpoint_holds_only_trainable_tensors_and_loads_strictly(tmp_path):
    model = build_tiny('multi', generator=dict(train_conv_in=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for state in (model.state_dict(), get_state_dict(model)):
        # The trained tensors, and the fingerprint of the frozen base they were trained on.
        assert set(state) == trainable | {'_extra_state'}
        assert set(fingerprint_from_state(state['_extra_state'])) == {'unet', 'vae', 'text_encoder'}
    assert any(k.startswith('generator.vae_lora.') for k in trainable)
    assert any(k.startswith('aux_diffusion.lora.') for k in trainable)
    assert 'generator.conv_in.weight' in trainable
    state = {k: v.clone() + 0.01 if k != '_extra_state' else v
             for k, v in model.state_dict().items()}  # the fingerprint stays that of the base
    other = build_tiny('multi', generator=dict(train_conv_in=True))
    result = other.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert all(torch.equal(state[k], v) for k, v in other.state_dict().items())
    load_state_dict(other, state, strict=True)  # MMEngine's loader, as the Runner uses
    missing = dict(state)
    missing.pop('generator.conv_in.weight')
    try:
        other.load_state_dict(missing, strict=True)
        raise AssertionError('a missing trainable tensor must fail a strict load')
    except RuntimeError as err:
        assert 'generator.conv_in.weight' in str(err)
    extra = dict(state, **{'generator.bogus': torch.zeros(1)})
    try:
        other.load_state_dict(extra, strict=True)
        raise AssertionError('an unknown key must fail a strict load')
    except RuntimeError as err:
        assert 'generator.bogus' in str(err)


def test_val_step_returns_cpu_float_predictions_in_unit_range(tiny_model):
    g = torch.Generator().manual_seed(0)
    data = dict(inputs=dict(gt=[torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8)],
                            lq=[torch.randint(0, 256, (3, 16, 16), generator=g, dtype=torch.uint8)]),
                data_samples=[SRDataSample(metainfo=dict(key='x', prompt=''))])
    out = tiny_model.val_step(data)
    assert out[0].pred_img.shape == (3, 64, 64) and out[0].pred_img.dtype == torch.float32
    assert out[0].pred_img.device.type == 'cpu'
    assert 0 <= out[0].pred_img.min() and out[0].pred_img.max() <= 1
    assert torch.equal(out[0].gt_img, data['inputs']['gt'][0].float() / 255)
    again = tiny_model.test_step(data)
    assert torch.equal(again[0].pred_img, out[0].pred_img)
    sr = tiny_model.super_resolve(data['inputs']['lq'][0][None].float() / 255, [''])
    assert sr.shape == (1, 3, 64, 64)
    # val/test run the one super-resolution path itself.
    assert torch.equal(sr[0], out[0].pred_img)


def test_training_inputs_degrade_and_extract_conditions(tiny_model):
    batch = tiny_model.training_inputs(hq_batch())
    assert batch['gt'].shape == batch['lq'].shape == (2, 3, 64, 64)
    assert not torch.equal(batch['gt'], batch['lq'])
    assert isinstance(batch['cond'], list) and batch['cond'][1].shape == (2, 1, 64, 64)
    # At test time the preprocessor only stacks: resizing happens in super_resolve.
    test = tiny_model.data_preprocessor(
        dict(inputs=dict(lq=[torch.zeros(3, 16, 16, dtype=torch.uint8)])), training=False)
    assert test['inputs']['lq'].shape == (1, 3, 16, 16) and test['inputs']['gt'] is None
    assert tiny_model.forward(test['inputs']).shape == (1, 3, 64, 64)


def test_bf16_frozen_parts_train_with_fp32_lora():
    model = build_tiny('color', unet=dict(type='SDUNet', from_config=arch_entry('tiny_unet'),
                                          torch_dtype='bfloat16'))
    ow = build_optim_wrapper(model, OPTIM)
    assert model.unet.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for g in model.trainable_groups().values() for p in g)
    before = _snapshot(model.trainable_groups()['generator'])
    log = model.train_step(hq_batch(), ow)
    assert all(torch.isfinite(v) for v in log.values())
    assert any(_changed(before, model.trainable_groups()['generator']))
