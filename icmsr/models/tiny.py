"""Ready-made ICMSR model configs: tiny random (tests, demo) and SD v1-4 layouts."""
import copy
from typing import Any, Dict, Optional

from . import arch_configs as arch

_ADAPTER_MODES = (None, 'color', 'canny', 'multi')


def _adapter_cfg(kind: str, tiny: bool, pretrained: bool) -> Dict[str, Any]:
    if pretrained:
        return dict(type='SDT2IAdapter', from_pretrained=arch.HUB_IDS[f'adapter_{kind}'])
    table = {('color', True): arch.TINY_ADAPTER_COLOR, ('canny', True): arch.TINY_ADAPTER_CANNY,
             ('color', False): arch.T2I_ADAPTER_COLOR_SD14,
             ('canny', False): arch.T2I_ADAPTER_CANNY_SD14}
    return dict(type='SDT2IAdapter', from_config=copy.deepcopy(table[(kind, tiny)]))


def icmsr_model_config(arch_name: str = 'tiny', adapter: Optional[str] = 'multi',
                       pretrained: bool = False, degradation: Optional[Dict[str, Any]] = None,
                       condition: Optional[Dict[str, Any]] = 'auto',
                       lpips: Optional[Dict[str, Any]] = None,
                       **overrides: Any) -> Dict[str, Any]:
    """Full ``ICMSR`` model config dict.

    Args:
        arch_name: ``'tiny'`` (random tiny SD stack) or ``'sd14'`` (SD v1-4 layout).
        adapter: ``None`` (OSEDiff), ``'color'``, ``'canny'`` or ``'multi'`` (color + canny,
            the paper's default).
        pretrained: ``'sd14'`` only: load the hub weights (CompVis / TencentARC ids)
            instead of random weights; replace the ids by local folders as needed.
        degradation: preprocessor degradation config (default Real-ESRGAN, x4).
        condition: condition extractor config; ``'auto'`` matches ``adapter``.
        lpips: ``LPIPSLoss`` args (default VGG, torchvision cache, random fallback).
        **overrides: top-level ICMSR args to replace (``generator=dict(...)`` ...).

    Returns:
        A dict for ``MODELS.build``.
    """
    if adapter not in _ADAPTER_MODES:
        raise ValueError(f'adapter must be one of {_ADAPTER_MODES}, got {adapter!r}')
    tiny = arch_name == 'tiny'
    if not tiny and arch_name != 'sd14':
        raise ValueError(f"arch_name must be 'tiny' or 'sd14', got {arch_name!r}")
    if pretrained and tiny:
        raise ValueError('pretrained weights exist only for arch_name="sd14".')
    if pretrained:
        sd = arch.HUB_IDS['sd14']
        parts = dict(unet=dict(type='SDUNet', from_pretrained=sd, subfolder='unet'),
                     vae=dict(type='SDVAE', from_pretrained=sd, subfolder='vae'),
                     text_encoder=dict(type='SDTextEncoder', from_pretrained=sd,
                                       subfolder='text_encoder'),
                     tokenizer=dict(type='SDTokenizer', from_pretrained=sd, subfolder='tokenizer'),
                     scheduler=dict(type='SDScheduler', from_pretrained=sd, subfolder='scheduler'))
    else:
        parts = dict(
            unet=dict(type='SDUNet', from_config=copy.deepcopy(
                arch.TINY_UNET if tiny else arch.SD14_UNET)),
            vae=dict(type='SDVAE', from_config=copy.deepcopy(
                arch.TINY_VAE if tiny else arch.SD14_VAE)),
            text_encoder=dict(type='SDTextEncoder', from_config=copy.deepcopy(
                arch.TINY_TEXT_ENCODER if tiny else arch.SD14_TEXT_ENCODER)),
            tokenizer=dict(type='SDTokenizer', from_config=dict(kind='tiny')),
            scheduler=dict(type='SDScheduler', from_config=copy.deepcopy(arch.SD14_SCHEDULER)))
    if adapter == 'multi':
        adapter_cfg: Optional[Dict[str, Any]] = dict(
            type='SDMultiAdapter', adapters=[_adapter_cfg('color', tiny, pretrained),
                                             _adapter_cfg('canny', tiny, pretrained)])
    elif adapter is not None:
        adapter_cfg = _adapter_cfg(adapter, tiny, pretrained)
    else:
        adapter_cfg = None
    if condition == 'auto':
        mode = {'color': 'colormap'}.get(adapter, adapter)
        condition = None if adapter is None else dict(type='ConditionExtractor', mode=mode)
    if degradation is None:
        # Tiny crops (64 px) need kernels that fit the smallest intermediate image.
        degradation = dict(type='RealESRGANDegradation', scale=4, resize_back=True)
        if tiny:
            degradation['kernel_sizes'] = (7, 9, 11)
    cfg: Dict[str, Any] = dict(
        type='ICMSR',
        **parts,
        adapter=adapter_cfg,
        adapter_weights=[1.0, 1.0] if adapter == 'multi' else None,
        generator=dict(lora_rank=4, timestep=999),
        regularizer=dict(cfg_scale=7.5, t_range=(20, 980), adapter_scale=1.0),
        aux_diffusion=dict(lora_rank=4, t_range=(0, 1000), use_adapter=False),
        text=dict(source='caption'),
        lpips=dict(net='vgg') if lpips is None else lpips,
        loss_weights=dict(l2=1.0, lpips=2.0, reg=1.0, aux=1.0),
        data_preprocessor=dict(
            type='SRDataPreprocessor',
            degradation=degradation,
            condition=condition))
    cfg.update(overrides)
    return cfg


def tiny_icmsr_config(adapter: Optional[str] = 'multi', **kwargs: Any) -> Dict[str, Any]:
    """Tiny random ICMSR config (tests, demo, CI): see :func:`icmsr_model_config`.

    Args:
        adapter: adapter mode.
        **kwargs: forwarded to :func:`icmsr_model_config`.

    Returns:
        The model config dict.
    """
    return icmsr_model_config('tiny', adapter=adapter, **kwargs)
