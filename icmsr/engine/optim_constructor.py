"""Optimizer-wrapper constructor of ICM-SR: one optimizer per trained part."""
import copy
from typing import Any, Dict, Optional

import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict

from icmsr.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ICMSROptimWrapperConstructor:
    """Build ``OptimWrapperDict(generator=..., aux_diffusion=...)`` for ``ICMSR``.

    Each entry of the config is an ordinary optim-wrapper config; its optimizer
    only receives the parameters of that part, as returned by
    ``ICMSR.trainable_groups()``: the generator's LoRA (VAE encoder + UNet, plus
    ``conv_in`` when trained) and the auxiliary model's LoRA. Frozen weights never
    reach an optimizer.

    Example::

        optim_wrapper = dict(
            constructor='ICMSROptimWrapperConstructor',
            generator=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=5e-5),
                           clip_grad=dict(max_norm=1.0)),
            aux_diffusion=dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=5e-5)))

    Args:
        optim_wrapper_cfg: ``{part: optim wrapper config}``; parts must match the
            model's groups exactly.
        paramwise_cfg: not supported (LoRA parameters share one setting per part).
    """

    def __init__(self, optim_wrapper_cfg: Dict[str, Any],
                 paramwise_cfg: Optional[Dict[str, Any]] = None) -> None:
        if paramwise_cfg:
            raise ValueError('ICMSROptimWrapperConstructor does not take paramwise_cfg; '
                             'set lr/weight_decay in each part\'s optimizer config.')
        for part, cfg in optim_wrapper_cfg.items():
            if not isinstance(cfg, dict) or 'optimizer' not in cfg:
                raise ValueError(f"optim_wrapper.{part} must be a dict with an 'optimizer' "
                                 f"key, e.g. dict(type='OptimWrapper', optimizer=dict("
                                 f"type='AdamW', lr=5e-5)); got {cfg!r}")
        self.optim_wrapper_cfg = copy.deepcopy(optim_wrapper_cfg)

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        """Build the wrappers.

        Args:
            model: ``ICMSR`` (possibly inside a model wrapper).

        Returns:
            The ``OptimWrapperDict``.
        """
        if is_model_wrapper(model):
            model = model.module
        groups = model.trainable_groups()
        missing = set(groups) - set(self.optim_wrapper_cfg)
        extra = set(self.optim_wrapper_cfg) - set(groups)
        if missing or extra:
            raise KeyError(f'optim_wrapper parts must be exactly {sorted(groups)}: '
                           f'missing {sorted(missing)}, unknown {sorted(extra)}.')
        wrappers = {}
        for part, params in groups.items():
            cfg = copy.deepcopy(self.optim_wrapper_cfg[part])
            cfg.setdefault('type', 'OptimWrapper')
            optimizer_cfg = cfg.pop('optimizer')
            optimizer_cfg['params'] = params
            optimizer = OPTIMIZERS.build(optimizer_cfg)
            wrappers[part] = OPTIM_WRAPPERS.build(cfg, default_args=dict(optimizer=optimizer))
        return OptimWrapperDict(**wrappers)
