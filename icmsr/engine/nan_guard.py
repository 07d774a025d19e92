"""Skip optimizer steps whose loss or gradients are not finite, and stop on a run of them.

One NaN in a 100K-iteration run should cost one iteration, not the run: Adam's
moments would carry a NaN forever once it reaches them. The decision has to be
taken between ``backward`` and ``optimizer.step``, which happens inside the
model's ``train_step`` (ICM-SR updates two optimizers per iteration), so it
lives in the optim wrapper:

* :class:`NonFiniteGuardOptimWrapper` (and its AMP twin) remember whether the
  loss given to ``backward`` was finite and check the gradient norm before
  stepping. A bad step zeroes the gradients and returns: parameters, optimizer
  moments and step counts stay exactly as they were.
* :class:`NonFiniteGuardHook` reads the wrappers' verdict after every
  iteration, logs each skip, and raises with a clear message after
  ``max_consecutive`` bad iterations in a row, naming which parts were not
  updated (and which were). Raising stops the Runner before the
  ``CheckpointHook`` runs, so the last checkpoint on disk is one written from
  finite weights. It also keeps non-finite loss values out of the logged
  averages: MMEngine's log line is a windowed mean, and one NaN in the window
  would print ``nan`` for the next ``window_size`` finite iterations.

Each optimizer decides for itself: when the generator's loss is NaN but the
auxiliary model's is finite, only the generator step is skipped. Under
distributed training the verdict is all-reduced, so every rank skips together
and the replicas never drift apart.
"""
import math
from typing import Dict, Iterable, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper, OptimWrapper, OptimWrapperDict

from icmsr.registry import HOOKS, OPTIM_WRAPPERS


def _all_ranks_agree_bad(bad: bool, device: torch.device) -> bool:
    """Return True when ``bad`` is True on any rank (identity without distribution).

    Args:
        bad: This rank's verdict.
        device: Device for the flag tensor (NCCL needs a CUDA tensor).

    Returns:
        The verdict shared by all ranks.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return bad
    if torch_dist.get_world_size() == 1:
        return bad
    if torch_dist.get_backend() == 'nccl':
        device = torch.device('cuda', torch.cuda.current_device())
    flag = torch.tensor([1.0 if bad else 0.0], device=device)
    torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def grads_are_finite(params: Iterable[torch.Tensor]) -> bool:
    """Check that every existing gradient of ``params`` is finite.

    Args:
        params: Parameters whose ``.grad`` to inspect (``None`` grads are skipped).

    Returns:
        True when all gradients are finite (or there are none).
    """
    norms = [torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32)
             for p in params if p.grad is not None]
    if not norms:
        return True
    return bool(torch.isfinite(torch.stack(norms).sum()).item())


class NonFiniteGuardMixin:
    """Optim-wrapper behaviour: skip ``step`` when the loss or gradients are not finite.

    Attributes:
        last_step_skipped (bool): Whether the latest ``step`` call was skipped.
        skipped_steps (int): Total steps skipped since construction.
    """

    #: Whether to inspect gradients too (AMP leaves non-finite grads to its scaler).
    check_grads = True

    def _init_guard(self) -> None:
        self.last_step_skipped = False
        self.skipped_steps = 0
        self._loss_finite = True
        self._device = torch.device('cpu')

    def _params(self) -> List[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group['params']]

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """Remember whether ``loss`` is finite, then back-propagate as usual.

        Backward always runs, even for a NaN loss: under DDP every rank must
        join the gradient all-reduce or the others hang.

        Args:
            loss: The (scaled) loss of this step.
            kwargs: Passed to ``Tensor.backward``.
        """
        # Accumulation: one bad micro-batch spoils the accumulated gradient.
        self._loss_finite = self._loss_finite and bool(torch.isfinite(loss.detach()).all())
        self._device = loss.device
        super().backward(loss, **kwargs)

    def step(self, **kwargs) -> None:
        """Step the optimizer unless this step's loss or gradients are not finite.

        Args:
            kwargs: Passed to the wrapped ``step``.
        """
        bad = not self._loss_finite
        if not bad and self.check_grads:
            bad = not grads_are_finite(self._params())
        bad = _all_ranks_agree_bad(bad, self._device)
        self._loss_finite = True
        self.last_step_skipped = bad
        if bad:
            self.skipped_steps += 1
            # Drop the poisoned gradients; parameters and moments stay untouched.
            self.optimizer.zero_grad(set_to_none=True)
            return
        super().step(**kwargs)


@OPTIM_WRAPPERS.register_module()
class NonFiniteGuardOptimWrapper(NonFiniteGuardMixin, OptimWrapper):
    """``OptimWrapper`` that skips steps with a non-finite loss or gradient.

    Args:
        **kwargs: Arguments of :class:`mmengine.optim.OptimWrapper`
            (``optimizer``, ``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_guard()


@OPTIM_WRAPPERS.register_module()
class AmpNonFiniteGuardOptimWrapper(NonFiniteGuardMixin, AmpOptimWrapper):
    """``AmpOptimWrapper`` that skips steps whose loss is not finite.

    Non-finite *gradients* are normal under dynamic loss scaling and are
    already handled by the ``GradScaler`` (it skips the step and lowers the
    scale), so only the loss is checked here.

    Args:
        **kwargs: Arguments of :class:`mmengine.optim.AmpOptimWrapper`.
    """

    check_grads = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_guard()


def guarded_wrappers(optim_wrapper: OptimWrapper) -> dict:
    """List the guard-enabled optim wrappers of a Runner by name.

    Args:
        optim_wrapper: The Runner's ``OptimWrapper`` or ``OptimWrapperDict``.

    Returns:
        ``{name: wrapper}`` for every wrapper using :class:`NonFiniteGuardMixin`.
    """
    if isinstance(optim_wrapper, OptimWrapperDict):
        items = dict(optim_wrapper.items())
    else:
        items = {'optimizer': optim_wrapper}
    return {k: w for k, w in items.items() if isinstance(w, NonFiniteGuardMixin)}


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Log skipped non-finite steps and stop training after too many in a row.

    Works with optim wrappers of type ``NonFiniteGuardOptimWrapper`` /
    ``AmpNonFiniteGuardOptimWrapper``; the wrappers do the skipping.

    Args:
        max_consecutive: Stop after this many consecutive iterations with at
            least one skipped step.
    """

    # Before RuntimeInfoHook (VERY_HIGH), which copies the outputs into the log
    # buffers, and before CheckpointHook: never save after the limit.
    priority = 'HIGHEST'

    def __init__(self, max_consecutive: int = 10) -> None:
        if max_consecutive < 1:
            raise ValueError(f'NonFiniteGuardHook: max_consecutive must be >= 1, '
                             f'got {max_consecutive}')
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0
        self._skips_in_run: Dict[str, int] = {}

    def before_train(self, runner) -> None:
        """Warn when no optim wrapper can skip steps (the hook would see nothing)."""
        if not guarded_wrappers(runner.optim_wrapper):
            runner.logger.warning(
                'NonFiniteGuardHook: no optim wrapper is a NonFiniteGuardOptimWrapper, '
                'so non-finite steps are NOT skipped. Set `type=\'NonFiniteGuardOptimWrapper\'` '
                'in each entry of `optim_wrapper`.')

    def before_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None) -> None:
        """Clear the wrappers' verdicts so a wrapper that did not step reads as fine."""
        for wrapper in guarded_wrappers(runner.optim_wrapper).values():
            wrapper.last_step_skipped = False

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Count skipped steps of this iteration; raise after too many in a row.

        Non-finite scalars are removed from ``outputs`` (the dict every later
        hook sees), so they never enter the logged averages; the warning
        names them instead.
        """
        wrappers = guarded_wrappers(runner.optim_wrapper)
        skipped = [name for name, w in wrappers.items() if w.last_step_skipped]
        bad_terms = self._drop_non_finite(outputs)
        runner.message_hub.update_scalar('train/skipped_steps', float(len(skipped)))
        if not skipped:
            self.consecutive = 0
            self._skips_in_run = {}
            return
        self.consecutive += 1
        self.total += 1
        for name in skipped:
            self._skips_in_run[name] = self._skips_in_run.get(name, 0) + 1
        shown = ', '.join(f'{k}={v}' for k, v in bad_terms.items())
        runner.logger.warning(
            f'Iteration {runner.iter + 1}: non-finite loss or gradient, skipped the '
            f'update of {skipped} ({self.consecutive} in a row, {self.total} in total)'
            + (f'; non-finite terms: {shown}' if shown else ''))
        if self.consecutive >= self.max_consecutive:
            raise RuntimeError(
                f'Training stopped at iteration {runner.iter + 1}: {self.consecutive} '
                f'consecutive iterations had a non-finite loss or gradient (limit '
                f'max_consecutive={self.max_consecutive} of NonFiniteGuardHook). '
                f'{self._updated_parts(list(wrappers))} The last checkpoint in '
                f'{runner.work_dir} is intact. Lower the learning rate, check the data, '
                f'or resume with `--resume`.')

    def _updated_parts(self, names: List[str]) -> str:
        """Say which optimizers' parts were (not) updated during the current bad run."""
        n = self.consecutive
        never = [k for k in names if self._skips_in_run.get(k, 0) == n]
        some = [f'{k} ({self._skips_in_run[k]} of {n} skipped)' for k in names
                if 0 < self._skips_in_run.get(k, 0) < n]
        always = [k for k in names if not self._skips_in_run.get(k)]
        parts = [f'Not updated in those {n} iterations: {", ".join(never)}.' if never else '']
        if some:
            parts.append(f'Partly updated: {", ".join(some)}.')
        if always:
            parts.append(f'Updated as usual: {", ".join(always)}.')
        return ' '.join(p for p in parts if p)

    @staticmethod
    def _drop_non_finite(outputs: Optional[dict]) -> Dict[str, str]:
        """Remove non-finite scalar entries from ``outputs``; return them formatted."""
        if not isinstance(outputs, dict):
            return {}
        bad = {}
        for key, value in list(outputs.items()):
            if not (isinstance(value, (int, float)) or
                    (torch.is_tensor(value) and value.numel() == 1)):
                continue
            number = float(value)
            if not math.isfinite(number):
                bad[key] = f'{number:.4g}'
                del outputs[key]
        return bad
