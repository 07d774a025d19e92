"""Prompt extractors: frozen image taggers / captioners that write the text prompts.

Registered in :data:`icmsr.registry.MODELS` (not a child registry: MMEngine resolves
the ``icmsr`` default scope to the first registry of that scope in the tree, MODELS,
so a same-scope child would be skipped inside every Runner); :func:`build_prompt_extractor`
checks that what it built is a :class:`PromptExtractor`. Their heavy packages (``ram``,
``transformers`` models) are imported on first use only.
"""
from typing import Any, Dict, List, Union

from icmsr.registry import MODELS
from .base import PromptExtractor, weights_from_env
from .hf_captioner import HFCaptioner
from .ram_tagger import RAMTagger

#: Short names accepted wherever an extractor config is (tools/extract_prompts.py).
PRESETS: Dict[str, Dict[str, Any]] = {
    'ram': dict(type='RAMTagger', variant='ram'),            # weights: $ICMSR_RAM
    'ram_plus': dict(type='RAMTagger', variant='ram_plus'),  # weights: $ICMSR_RAM_PLUS
    'dape': dict(type='RAMTagger', variant='dape'),          # $ICMSR_RAM + $ICMSR_DAPE
    'blip': dict(type='HFCaptioner', model='Salesforce/blip-image-captioning-base'),
}


def build_prompt_extractor(cfg: Union[str, Dict[str, Any], PromptExtractor]) -> PromptExtractor:
    """Build an extractor from a preset name, a registered type name or a config dict.

    Args:
        cfg: ``'ram'`` / ``'dape'`` / ... (see :data:`PRESETS`), ``'RAMTagger'``, a
            ``dict(type=..., ...)`` or an already built extractor.

    Returns:
        The extractor.
    """
    if isinstance(cfg, PromptExtractor):
        return cfg
    if isinstance(cfg, str):
        if cfg in PRESETS:
            cfg = dict(PRESETS[cfg])
        elif cfg in registered_extractors():
            cfg = dict(type=cfg)
        else:
            raise KeyError(f'unknown prompt extractor {cfg!r}: use one of {sorted(PRESETS)}, a '
                           f'registered type ({registered_extractors()}) or a config dict.')
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'a prompt extractor config must be a dict with "type", got {cfg!r}.')
    extractor = MODELS.build(dict(cfg))
    if not isinstance(extractor, PromptExtractor):
        raise TypeError(f'{cfg["type"]!r} built a {type(extractor).__name__}, not a '
                        'PromptExtractor (subclass icmsr.models.prompt_extractors.PromptExtractor).')
    return extractor


def registered_extractors() -> List[str]:
    """Names of the registered :class:`PromptExtractor` classes."""
    return sorted(name for name, cls in MODELS.module_dict.items()
                  if isinstance(cls, type) and issubclass(cls, PromptExtractor))


__all__ = ['PromptExtractor', 'RAMTagger', 'HFCaptioner', 'PRESETS', 'build_prompt_extractor',
           'registered_extractors', 'weights_from_env']
