"""Gradient checkpointing recomputes the generator under the generator's LoRA role.

Between the generator's forward and its backward, ICMSR runs the teacher (no
LoRA) and the fake score ('aux' LoRA) on the same shared UNet. Checkpointing
re-runs the generator's UNet blocks during backward, so a wrong active role then
would silently change the gradients. Two identical tiny models, one with
``generator=dict(gradient_checkpointing=True)``, take one SGD step (lr 1, no
clipping: the weight change is minus the gradient) on the same batch and the
same random draws; both parts must move identically.
"""
import pytest
import torch
from mmengine.optim import build_optim_wrapper

from model_testlib import build_tiny, hq_batch, randomize_lora


def _step(checkpointing):
    model = build_tiny('multi', generator=dict(lora_rank=4, timestep=999, train_latent='mode',
                                               gradient_checkpointing=checkpointing))
    # Non-zero LoRA: the generator, teacher and fake-score roles give different outputs.
    randomize_lora(model.generator, seed=3)
    randomize_lora(model.aux_diffusion, seed=4)
    optim = build_optim_wrapper(model, dict(
        constructor='ICMSROptimWrapperConstructor',
        generator=dict(optimizer=dict(type='SGD', lr=1.0)),
        aux_diffusion=dict(optimizer=dict(type='SGD', lr=1.0))))
    before = {part: [p.detach().clone() for p in ps]
              for part, ps in model.trainable_groups().items()}
    calls = []
    layer = dict(model.unet.named_modules())['down_blocks.0.resnets.0.conv1']
    handle = layer.register_forward_hook(lambda m, a, o: calls.append(torch.is_grad_enabled()))
    model.train()
    torch.manual_seed(7)
    model.train_step(hq_batch(batch=1), optim)
    handle.remove()
    deltas = {part: [p.detach() - b for p, b in zip(ps, before[part])]
              for part, ps in model.trainable_groups().items()}
    return deltas, calls


@pytest.fixture(scope='module')
def plain_and_checkpointed():
    return _step(False), _step(True)


def test_checkpointing_recomputes_during_backward(plain_and_checkpointed):
    (_, plain_calls), (_, ckpt_calls) = plain_and_checkpointed
    # Generator, teacher, fake score, aux loss; with checkpointing the generator's
    # and the aux model's blocks run once more, inside backward.
    assert len(plain_calls) == 4
    assert len(ckpt_calls) > len(plain_calls)


def test_gradients_equal_with_and_without_checkpointing(plain_and_checkpointed):
    (plain, _), (ckpt, _) = plain_and_checkpointed
    for part in ('generator', 'aux_diffusion'):
        assert any(d.abs().max() > 0 for d in plain[part]), part
        for a, b in zip(plain[part], ckpt[part]):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
