"""NonFiniteGuardOptimWrapper + NonFiniteGuardHook: a NaN step changes nothing; a run of them stops."""
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from icmsr.engine.nan_guard import NonFiniteGuardOptimWrapper, grads_are_finite

from engine_toy import toy_runner_cfg


class _Record(Hook):
    """Copy parameters and AdamW step counts after every iteration."""

    priority = 'LOWEST'

    def __init__(self):
        self.params, self.steps = [], []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        model = runner.model
        self.params.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        self.steps.append({name: [float(s['step']) for s in w.optimizer.state.values()]
                           for name, w in runner.optim_wrapper.items()})


def test_grads_are_finite():
    p = torch.nn.Parameter(torch.ones(3))
    assert grads_are_finite([p])  # no grad yet
    p.grad = torch.tensor([1.0, float('inf'), 0.0])
    assert not grads_are_finite([p])
    p.grad = torch.ones(3)
    assert grads_are_finite([p])


def test_wrapper_skips_step_and_keeps_optimizer_state():
    lin = torch.nn.Linear(2, 1)
    wrapper = NonFiniteGuardOptimWrapper(optimizer=torch.optim.AdamW(lin.parameters(), lr=0.1))
    wrapper.update_params(lin(torch.ones(1, 2)).sum())
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    state_before = {k: {n: t.clone() for n, t in s.items()}
                    for k, s in enumerate(wrapper.optimizer.state.values())}
    wrapper.update_params(lin(torch.ones(1, 2)).sum() * float('nan'))
    assert wrapper.last_step_skipped and wrapper.skipped_steps == 1
    for k, v in lin.state_dict().items():
        assert torch.equal(v, before[k])
    for k, s in enumerate(wrapper.optimizer.state.values()):
        for n, t in s.items():
            assert torch.equal(t, state_before[k][n]), n
    assert all(p.grad is None for p in lin.parameters())
    wrapper.update_params(lin(torch.ones(1, 2)).sum())  # a good step steps again
    assert not wrapper.last_step_skipped
    assert not torch.equal(lin.weight, before['weight'])


def test_runner_skips_injected_nan(tmp_path):
    record = _Record()
    runner = Runner(**toy_runner_cfg(str(tmp_path), max_iters=4, nan_at=[2]),
                    custom_hooks=[record])
    runner.train()
    p, steps = record.params, record.steps
    # Iteration index 2: the generator step was skipped, the aux step was not.
    for k in p[2]:
        if k.startswith('generator.'):
            assert torch.equal(p[2][k], p[1][k]), k
    assert not torch.equal(p[2]['aux_diffusion.weight'], p[1]['aux_diffusion.weight'])
    assert not torch.equal(p[3]['generator.weight'], p[2]['generator.weight'])
    assert steps[3]['generator'] == [3.0, 3.0] and steps[3]['aux_diffusion'] == [4.0, 4.0]
    assert all(torch.isfinite(v).all() for v in p[3].values())


def test_runner_stops_after_consecutive_bad_steps(tmp_path):
    runner = Runner(**toy_runner_cfg(str(tmp_path), max_iters=9, nan_at=[3, 4, 5]))
    with pytest.raises(RuntimeError, match='3 consecutive iterations had a non-finite'):
        runner.train()
    assert osp.isfile(tmp_path / 'iter_3.pth')
    assert not osp.exists(tmp_path / 'iter_6.pth')  # nothing saved at the failing iteration
    ckpt = torch.load(tmp_path / 'iter_3.pth', map_location='cpu')
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values())


class _LoggedMeans(Hook):
    """Read the windowed means MMEngine's log line prints, after every iteration."""

    priority = 'LOWEST'

    def __init__(self):
        self.means = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        buf = runner.message_hub.get_scalar('train/loss_gen')
        self.means.append(buf.mean(10))


def test_logged_loss_is_finite_after_a_skipped_step(tmp_path):
    logged = _LoggedMeans()
    runner = Runner(**toy_runner_cfg(str(tmp_path), max_iters=6, nan_at=[2]),
                    custom_hooks=[logged])
    runner.train()
    # The window of 10 includes iteration 3 (the NaN one) for every later line.
    assert all(torch.isfinite(torch.tensor(m)) for m in logged.means), logged.means


def test_stop_message_names_parts_not_updated_and_updated(tmp_path):
    runner = Runner(**toy_runner_cfg(str(tmp_path), max_iters=9, nan_at=[3, 4, 5]))
    with pytest.raises(RuntimeError) as info:
        runner.train()
    msg = str(info.value)
    # Only the generator's loss was NaN: its step was skipped, the aux model's was not.
    assert 'Not updated in those 3 iterations: generator.' in msg
    assert 'Updated as usual: aux_diffusion.' in msg
    assert 'weights were not updated' not in msg
