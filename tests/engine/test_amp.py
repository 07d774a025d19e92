"""bf16 autocast on both optimizers of ICMSR (CPU), with the non-finite guard.

The same wrapper runs on CUDA; here torch's CPU autocast stands in. Checked: the
UNet's matmuls of the generator, teacher/fake and aux passes really run in bf16,
the trained LoRA stays float32 and moves, and a NaN loss or a NaN gradient skips
exactly the affected optimizer's step.
"""
import os.path as osp
import sys

import pytest
import torch
from mmengine.optim import build_optim_wrapper

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'models'))
from model_testlib import build_tiny, hq_batch  # noqa: E402

WRAPPER = 'AutocastNonFiniteGuardOptimWrapper'


def _optim(model, **wrapper):
    part = dict(type=WRAPPER, optimizer=dict(type='AdamW', lr=1e-3), clip_grad=dict(max_norm=1.0),
                **wrapper)
    return build_optim_wrapper(model, dict(constructor='ICMSROptimWrapperConstructor',
                                           generator=dict(part), aux_diffusion=dict(part)))


def _snapshot(model):
    return {part: [p.detach().clone() for p in params]
            for part, params in model.trainable_groups().items()}


def _moved(model, before):
    return {part: any(not torch.equal(p, b) for p, b in zip(params, before[part]))
            for part, params in model.trainable_groups().items()}


def _unet_linear_dtypes(model, dtype):
    """Train one step and return the output dtypes of one UNet attention projection."""
    seen = []
    layer = dict(model.unet.named_modules())['down_blocks.0.attentions.0.transformer_blocks.0'
                                             '.attn1.to_q']
    handle = layer.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    model.train()
    model.train_step(hq_batch(batch=1), _optim(model, dtype=dtype))
    handle.remove()
    return seen


@pytest.fixture(scope='module')
def model():
    return build_tiny('multi')


def test_bf16_autocast_reaches_every_unet_pass(model):
    # Generator forward, teacher + fake score (regularizer), aux loss: 4 calls of the UNet.
    assert _unet_linear_dtypes(model, 'float32') == [torch.float32] * 4
    assert _unet_linear_dtypes(model, 'bfloat16') == [torch.bfloat16] * 4


def test_bf16_step_trains_float32_lora_of_both_parts(model):
    optim = _optim(model)
    before = _snapshot(model)
    model.train()
    log = model.train_step(hq_batch(batch=1), optim)
    assert all(torch.isfinite(v) for v in log.values())
    assert _moved(model, before) == dict(generator=True, aux_diffusion=True)
    for params in model.trainable_groups().values():
        assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params)
    assert not any(w.last_step_skipped for w in optim.values())


def test_nan_aux_loss_skips_only_the_aux_step(model, monkeypatch):
    optim = _optim(model)
    forward = model.aux_diffusion.forward
    monkeypatch.setattr(model.aux_diffusion, 'forward',
                        lambda *a, **k: forward(*a, **k) * float('nan'))
    before = _snapshot(model)
    model.train()
    model.train_step(hq_batch(batch=1), optim)
    assert _moved(model, before) == dict(generator=True, aux_diffusion=False)
    assert optim['aux_diffusion'].last_step_skipped
    assert not optim['generator'].last_step_skipped


def test_nan_gradient_with_finite_loss_is_skipped(model):
    # No loss scaler under bf16: the guard itself must catch non-finite gradients.
    optim = _optim(model)
    param = model.trainable_groups()['generator'][0]
    handle = param.register_hook(lambda grad: grad * float('nan'))
    before = _snapshot(model)
    model.train()
    try:
        log = model.train_step(hq_batch(batch=1), optim)
    finally:
        handle.remove()
    assert torch.isfinite(log['loss'])
    assert _moved(model, before) == dict(generator=False, aux_diffusion=True)
    assert optim['generator'].last_step_skipped and optim['generator'].skipped_steps == 1


def test_float16_is_refused_with_the_scaled_wrapper_named():
    from icmsr.engine.amp import AutocastNonFiniteGuardOptimWrapper
    lin = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match='AmpNonFiniteGuardOptimWrapper'):
        AutocastNonFiniteGuardOptimWrapper(dtype='float16',
                                           optimizer=torch.optim.SGD(lin.parameters(), lr=1))
