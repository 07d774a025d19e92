"""Carry every random-number stream of a run through checkpoints and validation.

MMEngine's resume restores weights, optimizers, schedulers and the iteration,
then re-seeds the global generators from the *initial* seed. ICM-SR draws
random numbers every iteration (degradation kernels and noise, diffusion
timesteps, VSD noise), from the global generators and from ``torch.Generator``
objects held by its modules, so a resumed run would continue on a different
random stream than the uninterrupted one. :class:`RandomStateHook` makes
resume exact:

* ``before_save_checkpoint``: stores the states of Python's ``random``,
  NumPy's global generator, torch's CPU (and CUDA) generator and every
  ``torch.Generator`` attribute of the model's modules, for every rank.
* ``after_load_checkpoint``: keeps those states aside. The train loop
  (:class:`~icmsr.engine.loops.ExactResumeIterBasedTrainLoop`) first replays the
  dataloader to the resumed iteration, which consumes random numbers of its
  own, and then calls the hook method ``after_data_replay`` (through the
  runner), where the states are put back, just before the first new batch.
* Validation is made invisible to the training stream: the
  states are captured before a validation run and put back after it, so a run
  validated every 1000 iterations and one never validated follow the same path.
"""
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from icmsr.registry import HOOKS

CHECKPOINT_KEY = 'random_states'


def module_generators(model: torch.nn.Module) -> Dict[str, torch.Generator]:
    """Find the ``torch.Generator`` objects that the model's modules hold as attributes.

    Args:
        model: The model (wrappers are unwrapped).

    Returns:
        ``{'<module path>.<attribute>': generator}`` in a stable order.
    """
    if is_model_wrapper(model):
        model = model.module
    found: Dict[str, torch.Generator] = {}
    seen = set()
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for attr, value in sorted(vars(module).items()):
            if isinstance(value, torch.Generator) and id(value) not in seen:
                seen.add(id(value))
                found[f'{mod_name}.{attr}' if mod_name else attr] = value
    return found


def capture_random_state(model: Optional[torch.nn.Module] = None) -> Dict[str, Any]:
    """Snapshot the global random generators and the model's own generators.

    Args:
        model: Model whose ``torch.Generator`` attributes to include.

    Returns:
        A dict of plain types and tensors, loadable with ``weights_only=True``.
    """
    state: Dict[str, Any] = {
        'python': random.getstate(),
        'numpy': np.random.get_state(),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    if model is not None:
        state['generators'] = {k: dict(state=g.get_state(), device=str(g.device))
                               for k, g in module_generators(model).items()}
    return state


def _lazy_generator_slot(model: torch.nn.Module, name: str):
    """Return ``(module, attr)`` when ``name`` is a generator attribute still set to None.

    Modules may create their generator on first use (e.g. the degradation); in a
    freshly resumed process that attribute is still None, so the saved state is
    put into a new generator there.
    """
    if is_model_wrapper(model):
        model = model.module
    mod_name, _, attr = name.rpartition('.')
    try:
        module = model.get_submodule(mod_name) if mod_name else model
    except AttributeError:
        return None
    if attr in vars(module) and vars(module)[attr] is None:
        return module, attr
    return None


def restore_random_state(state: Dict[str, Any],
                         model: Optional[torch.nn.Module] = None) -> List[str]:
    """Put back states captured by :func:`capture_random_state`.

    Args:
        state: The captured states.
        model: Model whose generators to restore.

    Returns:
        Names of model generators present now but absent from ``state``
        (left as they are), so the caller can warn.
    """
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        states = state['cuda']
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    missing = []
    if model is not None:
        saved = dict(state.get('generators', {}))
        for name, gen in module_generators(model).items():
            if name in saved:
                gen.set_state(saved.pop(name)['state'])
            else:
                missing.append(name)
        for name, entry in saved.items():
            slot = _lazy_generator_slot(model, name)
            if slot is not None:
                gen = torch.Generator(device=entry['device'])
                gen.set_state(entry['state'])
                setattr(slot[0], slot[1], gen)
    return missing


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save/restore all random streams so that ``--resume`` continues bit-exactly.

    Args:
        isolate_validation: Restore the training stream after each validation
            run, so validation never changes the training trajectory.
    """

    priority = 'VERY_HIGH'

    def __init__(self, isolate_validation: bool = True) -> None:
        self.isolate_validation = isolate_validation
        self._pending: Optional[Dict[str, Any]] = None
        self._before_val: Optional[Dict[str, Any]] = None
        self._training = False  # between before_train and after_train
        self._gathered: Optional[List[Dict[str, Any]]] = None

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        """Distributed: gather every rank's random states, on every rank.

        MMEngine saves checkpoints on rank 0 only (``Runner.save_checkpoint`` is
        ``master_only``), so a collective inside ``before_save_checkpoint`` would wait
        forever for the other ranks. The states are gathered after every iteration
        instead (one ``all_gather_object`` of a few tens of kB, small beside the
        iteration's gradient all-reduce), by this hook that runs before the
        ``CheckpointHook`` (priority VERY_HIGH vs VERY_LOW); the hooks between them
        draw no random numbers, so the states gathered here are the ones of a save.
        """
        if is_distributed():
            self._gathered = all_gather_object(capture_random_state(runner.model))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add every rank's random states to ``checkpoint``."""
        if is_distributed():
            states = self._gathered
            if states is None:  # a save before the first iteration: this rank only
                runner.logger.warning('RandomStateHook: checkpoint saved before any '
                                      'training iteration; only this rank\'s random '
                                      'states are stored, resume re-seeds the others.')
                checkpoint[CHECKPOINT_KEY] = {'world_size': 1,
                                              'ranks': [capture_random_state(runner.model)]}
                return
        else:
            states = [capture_random_state(runner.model)]
        checkpoint[CHECKPOINT_KEY] = {'world_size': get_world_size(), 'ranks': states}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep this rank's states until the train loop has replayed the dataloader."""
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            # load_from of weights only, or a checkpoint of another toolkit.
            return
        if saved['world_size'] != get_world_size():
            runner.logger.warning(
                f'RandomStateHook: checkpoint written by {saved["world_size"]} processes, '
                f'resuming with {get_world_size()}; random streams are re-seeded instead '
                'of restored, so the run will not repeat the original one exactly.')
            return
        self._pending = saved['ranks'][get_rank()]

    def after_data_replay(self, runner) -> None:
        """Restore the states loaded by :meth:`after_load_checkpoint` (called by the loop)."""
        if self._pending is None:
            return
        missing = restore_random_state(self._pending, runner.model)
        self._pending = None
        if missing:
            runner.logger.warning(
                f'RandomStateHook: generators {missing} are not in the checkpoint and keep '
                'their freshly seeded state.')

    def before_train(self, runner) -> None:
        """Training starts: validation runs from now on are isolated."""
        self._training = True

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        """Restore states still pending: the loop never announced the end of its replay."""
        if self._pending is not None:
            runner.logger.warning(
                'RandomStateHook: the train loop does not call `after_data_replay`; random '
                'states are restored after the first batch was fetched, so the resumed run '
                'is not exact. Use ExactResumeIterBasedTrainLoop for an exact resume.')
            self.after_data_replay(runner)

    def after_train(self, runner) -> None:
        """Validation after training (``runner.val()``) needs no isolation."""
        self._training = False

    def before_val(self, runner) -> None:
        """Remember the training stream before validation consumes random numbers."""
        if self.isolate_validation and self._training:
            self._before_val = capture_random_state(runner.model)

    def after_val(self, runner) -> None:
        """Give the training stream back exactly as validation found it."""
        if self._before_val is not None:
            restore_random_state(self._before_val, runner.model)
            self._before_val = None
