"""A toy model and dataset that exercise the runner machinery in milliseconds.

The toy draws random numbers the way ICM-SR does: the dataset's transforms use
NumPy's global generator, the model's ``train_step`` uses torch's global
generator *and* a private ``torch.Generator`` attribute, and it updates two
optimizers per iteration through an ``OptimWrapperDict``.
"""
import uuid
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from icmsr.registry import DATASETS, MODELS


@DATASETS.register_module(force=True)
class ToyNoisyDataset(Dataset):
    """Fixed vectors, each returned with NumPy-global random jitter.

    Args:
        length: Number of items.
    """

    def __init__(self, length: int = 12) -> None:
        self.base = torch.arange(length * 4, dtype=torch.float32).reshape(length, 4) / 10
        self.metainfo = dict(name='toy')

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict:
        jitter = torch.from_numpy(np.random.normal(size=4).astype(np.float32))
        return dict(inputs=self.base[idx] + 0.1 * jitter, index=idx)


@MODELS.register_module(force=True)
class ToyTwoOptimModel(BaseModel):
    """Two parameter vectors updated by two optimizers, with random draws like ICM-SR.

    Args:
        nan_at: Iterations (0-based, counted by the model) whose generator loss is NaN.
        seed: Seed of the private generator.
    """

    def __init__(self, nan_at: Optional[list] = None, seed: int = 3) -> None:
        super().__init__()
        self.generator = nn.Linear(4, 4)
        self.aux_diffusion = nn.Linear(4, 4)
        self.nan_at = set(nan_at or [])
        self.calls = 0
        self._rng = torch.Generator().manual_seed(seed)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        """Return the generator's output (the toy has no loss mode)."""
        return self.generator(inputs)

    def train_step(self, data, optim_wrapper):
        """One generator update and one aux update, each with fresh random numbers."""
        x = torch.stack(data['inputs']) if isinstance(data['inputs'], list) else data['inputs']
        noise = torch.randn(x.shape)                              # global torch stream
        t = torch.rand(x.shape[0], 1, generator=self._rng)        # private stream
        with optim_wrapper['generator'].optim_context(self):
            loss_g = ((self.generator(x + noise) - t * x) ** 2).mean()
        if self.calls in self.nan_at:
            loss_g = loss_g * float('nan')
        optim_wrapper['generator'].update_params(loss_g)
        with optim_wrapper['aux_diffusion'].optim_context(self):
            target = torch.randn(x.shape, generator=self._rng)
            loss_a = ((self.aux_diffusion(x.detach()) - target) ** 2).mean()
        optim_wrapper['aux_diffusion'].update_params(loss_a)
        self.calls += 1
        return dict(loss_gen=loss_g.detach(), loss_aux=loss_a.detach())


def toy_runner_cfg(work_dir: str, max_iters: int, ckpt_interval: int = 3, **model_kw) -> dict:
    """Keyword arguments of a Runner that trains the toy for ``max_iters`` iterations.

    Args:
        work_dir: Work directory.
        max_iters: Iterations of the train loop.
        ckpt_interval: Checkpoint interval.
        **model_kw: Arguments of :class:`ToyTwoOptimModel`.

    Returns:
        Runner keyword arguments.
    """
    from mmengine.optim import OptimWrapperDict
    from icmsr.engine import NonFiniteGuardOptimWrapper
    torch.manual_seed(0)  # identical initial weights in every run
    model = ToyTwoOptimModel(**model_kw)

    def wrapper(module):
        return NonFiniteGuardOptimWrapper(
            optimizer=torch.optim.AdamW(module.parameters(), lr=0.05),
            clip_grad=dict(max_norm=1.0))

    return dict(
        model=model,
        work_dir=work_dir,
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(dataset=dict(type='ToyNoisyDataset'),
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              batch_size=3, num_workers=0,
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(type='ExactResumeIterBasedTrainLoop', max_iters=max_iters,
                       val_interval=10 ** 6),
        optim_wrapper=OptimWrapperDict(generator=wrapper(model.generator),
                                       aux_diffusion=wrapper(model.aux_diffusion)),
        param_scheduler=[dict(type='CosineAnnealingLR', by_epoch=False, begin=0,
                              end=max_iters, T_max=max_iters)],
        default_hooks=dict(
            checkpoint=dict(type='AtomicCheckpointHook', interval=ckpt_interval, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1),
            random_state=dict(type='RandomStateHook'),
            nan_guard=dict(type='NonFiniteGuardHook', max_consecutive=3)),
        randomness=dict(seed=11),
        default_scope='icmsr',
        log_level='WARNING',
    )


class SimulatedCrash(Exception):
    """Raised by :class:`CrashAfter` to stand for a killed run."""


class CrashAfter(Hook):
    """Kill the run after iteration ``n`` (after that iteration's checkpoint hook)."""

    priority = 'LOWEST'

    def __init__(self, n: int) -> None:
        self.n = n

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.n:
            raise SimulatedCrash()
