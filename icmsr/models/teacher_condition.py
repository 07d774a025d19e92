"""The teacher's structural condition F_c: one config block, extractor and adapters together.

ICM-SR conditions the VSD teacher on sparse structure of the HQ image through
T2I-Adapters. What the extractor computes and what the adapters accept must
agree (a colormap goes to an RGB adapter, Canny edges to a one-channel one, in
the order of a ``MultiAdapter``), so both are built here from one block::

    condition=dict(kind='multi', adapters=[color_cfg, canny_cfg], weights=[1.0, 1.0],
                   scale=1.0, extractor=dict(canny_low=100, canny_high=200))

and the pairing is checked when the model is built, with errors naming the key.
"""
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from icmsr.registry import MODELS, build_or_use
from .conditions import ConditionExtractor

#: Input channels of the adapter(s) each kind feeds, in MultiAdapter order.
KIND_CHANNELS: Dict[str, tuple] = {
    'colormap': (3, ),
    'canny': (1, ),
    'lq': (3, ),
    'multi': (3, 1),  # [colormap, canny]
}

ConditionInputs = Union[torch.Tensor, List[torch.Tensor]]


def _adapter_in_channels(adapter: nn.Module) -> Optional[int]:
    """``in_channels`` of a diffusers ``T2IAdapter`` (None when it does not say)."""
    config = getattr(adapter, 'config', None)
    value = getattr(config, 'in_channels', None)
    return None if value is None else int(value)


@MODELS.register_module()
class TeacherCondition(nn.Module):
    """Structural condition of the teacher: ``F_c = extractor(HQ)`` and ``A(F_c)``.

    Args:
        kind: ``'colormap'``, ``'canny'``, ``'multi'`` (colormap + Canny, the
            paper's default) or ``'lq'`` (the dense LQ condition of ICM-SR-lq).
        adapters: one adapter config (``type='SDT2IAdapter'``) or module per
            input of ``kind``, in the order of :data:`KIND_CHANNELS`.
        weights: per-adapter weights of the ``MultiAdapter`` sum (None: diffusers'
            default 1/N); ignored for one adapter.
        scale: global multiplier of the adapter features (Table 4: 0, 0.5, 1).
        extractor: extra :class:`ConditionExtractor` arguments (its ``mode`` is ``kind``).
        torch_dtype: dtype of the frozen adapters (e.g. ``'bfloat16'``); None keeps theirs.

    Raises:
        ValueError / KeyError naming ``condition.<key>`` when the block is inconsistent.
    """

    def __init__(self, kind: str, adapters: Union[Any, Sequence[Any]],
                 weights: Optional[Sequence[float]] = None, scale: float = 1.0,
                 extractor: Optional[Dict[str, Any]] = None,
                 torch_dtype: Optional[Any] = None) -> None:
        super().__init__()
        if kind not in KIND_CHANNELS:
            raise KeyError(f'condition.kind={kind!r} is not one of {sorted(KIND_CHANNELS)}.')
        if isinstance(adapters, (dict, nn.Module)):
            adapters = [adapters]
        channels = KIND_CHANNELS[kind]
        if adapters is None or len(adapters) != len(channels):
            got = 0 if adapters is None else len(adapters)
            raise ValueError(
                f'condition.kind={kind!r} feeds {len(channels)} adapter(s) with input channels '
                f'{list(channels)}, but condition.adapters has {got}.')
        if weights is not None and len(weights) != len(channels):
            raise ValueError(f'condition.weights has {len(weights)} entries for '
                             f'{len(channels)} adapter(s) of condition.kind={kind!r}.')
        extractor = dict(extractor or {})
        if 'mode' in extractor and extractor['mode'] != kind:
            raise ValueError(f"condition.extractor.mode={extractor['mode']!r} contradicts "
                             f'condition.kind={kind!r}; drop the mode (kind sets it).')
        extractor.pop('mode', None)
        built = [build_or_use(cfg) for cfg in adapters]
        for i, (adapter, want) in enumerate(zip(built, channels)):
            have = _adapter_in_channels(adapter)
            if have is not None and have != want:
                raise ValueError(
                    f'condition.adapters[{i}] takes in_channels={have}, but condition.kind='
                    f'{kind!r} gives it {want}-channel input (colormap/LQ: 3, Canny: 1).')
        if len(built) == 1:
            self.adapter = built[0]
        else:
            from diffusers import MultiAdapter
            self.adapter = MultiAdapter(built)
        self.adapter.requires_grad_(False).eval()
        if torch_dtype is not None:
            from .backbones import resolve_dtype
            nn.Module.to(self.adapter, dtype=resolve_dtype(torch_dtype))
        self.kind = kind
        self.weights = None if weights is None else [float(w) for w in weights]
        self.scale = float(scale)
        self.extractor = ConditionExtractor(mode=kind, **extractor)

    def train(self, mode: bool = True) -> 'TeacherCondition':
        """Keep the frozen adapters in eval mode."""
        super().train(mode)
        self.adapter.eval()
        return self

    @torch.no_grad()
    def extract(self, hq: torch.Tensor, lq: Optional[torch.Tensor] = None) -> ConditionInputs:
        """The adapter inputs ``F_c`` of a batch.

        Args:
            hq: ``(B, 3, H, W)`` HQ images in ``[0, 1]``.
            lq: the LQ batch (used by ``kind='lq'``).

        Returns:
            One tensor, or ``[colormap, canny]`` for ``'multi'``.
        """
        return self.extractor(hq, lq)

    @torch.no_grad()
    def features(self, cond: Optional[ConditionInputs]) -> Optional[List[torch.Tensor]]:
        """Adapter features ``scale * A(F_c)``, one map per UNet down block.

        Args:
            cond: the output of :meth:`extract` (None gives None).

        Returns:
            The feature maps, or None.
        """
        if cond is None:
            return None
        dtype = next(self.adapter.parameters()).dtype
        if isinstance(cond, (list, tuple)):
            feats = self.adapter([c.to(dtype) for c in cond], self.weights)
        else:
            feats = self.adapter(cond.to(dtype))
        return [f * self.scale for f in feats]
