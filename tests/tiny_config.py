"""Tiny model configs for the tests, read from the one tiny definition (configs/icmsr_tiny.py)."""
import copy
import functools
import os.path as osp
from typing import Any, Dict, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CONFIG = osp.join(ROOT, 'configs', 'icmsr_tiny.py')
#: Short names used by the tests -> condition kinds.
KINDS = {'multi': 'multi', 'color': 'colormap', 'colormap': 'colormap', 'canny': 'canny', 'lq': 'lq'}


@functools.lru_cache(maxsize=1)
def _tiny():
    from mmengine.config import Config
    return Config.fromfile(TINY_CONFIG)


def arch_entry(name: str) -> Dict[str, Any]:
    """A top-level entry of the tiny config, as a dict: a tiny architecture (``'tiny_unet'``) or,
    inherited from ``configs/_base_/models/sd14_arch.py``, an SD v1-4 one (``'sd14_unet'``)."""
    value = _tiny()[name]
    return copy.deepcopy(value.to_dict() if hasattr(value, 'to_dict') else value)


def tiny_adapter(kind: str) -> Dict[str, Any]:
    """The tiny colour (``'color'``) or Canny (``'canny'``) adapter config."""
    return dict(type='SDT2IAdapter', from_config=arch_entry(f'tiny_adapter_{kind}'))


def tiny_condition(kind: Optional[str]) -> Optional[Dict[str, Any]]:
    """A condition block with tiny adapters for ``kind`` (None: text-only teacher)."""
    if kind is None:
        return None
    kind = KINDS[kind]
    adapters = dict(multi=['color', 'canny'], colormap=['color'], lq=['color'],
                    canny=['canny'])[kind]
    return dict(kind=kind, adapters=[tiny_adapter(a) for a in adapters],
                weights=[1.0, 1.0] if kind == 'multi' else None, scale=1.0,
                extractor=_tiny().model.condition.extractor.to_dict())


def tiny_model_cfg(condition: Optional[str] = 'multi', **overrides: Any) -> Dict[str, Any]:
    """The tiny ``ICMSR`` model config with another condition and top-level keys replaced.

    Args:
        condition: ``'multi'``, ``'color'``, ``'canny'``, ``'lq'`` or None.
        **overrides: top-level model keys to replace (``generator=dict(...)``...).

    Returns:
        A plain dict for ``MODELS.build``.
    """
    cfg = _tiny().model.to_dict()
    cfg['condition'] = tiny_condition(condition)
    cfg.update(copy.deepcopy(overrides))
    return cfg
