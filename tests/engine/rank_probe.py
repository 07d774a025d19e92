"""A hook for the multi-process CLI test: every rank saves its trainable weights.

Imported by the test's config through ``custom_imports``; writes
``<out_dir>/rank{r}_{before,after}.pt`` with the trainable tensors (DDP's
``module.`` segments removed) and the process-group facts of that rank.
"""
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from icmsr.registry import HOOKS


def _trainable(model):
    model = model.module if is_model_wrapper(model) else model
    return {k.replace('.module.', '.'): p.detach().cpu().clone()
            for k, p in model.named_parameters() if p.requires_grad}


@HOOKS.register_module()
class RankWeightsProbeHook(Hook):
    """Save this rank's trainable weights before and after training.

    Args:
        out_dir: Folder for the per-rank files.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def _save(self, runner, when: str) -> None:
        rank = torch_dist.get_rank() if torch_dist.is_initialized() else 0
        info = dict(params=_trainable(runner.model), iter=runner.iter,
                    world_size=torch_dist.get_world_size() if torch_dist.is_initialized() else 1,
                    backend=torch_dist.get_backend() if torch_dist.is_initialized() else None,
                    wrapper=type(runner.model).__name__)
        torch.save(info, osp.join(self.out_dir, f'rank{rank}_{when}.pt'))

    def before_train(self, runner) -> None:
        """Record the starting weights."""
        self._save(runner, 'before')

    def after_train(self, runner) -> None:
        """Record the final weights."""
        self._save(runner, 'after')
