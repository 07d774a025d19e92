"""Model configs of the benchmarks: the tiny stack or the SD v1-4 architecture, random weights.

Both come from the configs (``configs/icmsr_tiny.py`` and
``configs/_base_/models/sd14_arch.py``), so the benchmarks measure the model the
configs train, with the paper's settings.
"""
import copy
import os.path as osp
from typing import Any, Dict, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ARCHS = ('tiny', 'sd14')


def bench_model_config(arch: str = 'tiny', condition: Optional[str] = 'multi',
                       **overrides: Any) -> Dict[str, Any]:
    """The ``ICMSR`` model config of ``configs/icmsr_tiny.py`` with ``arch``'s architectures.

    Args:
        arch: ``'tiny'`` or ``'sd14'`` (SD v1-4 and TencentARC adapter layouts, random weights).
        condition: ``'multi'`` (the paper's model) or None (text-only teacher).
        **overrides: top-level model keys to replace.

    Returns:
        A plain dict for ``MODELS.build``.
    """
    from mmengine.config import Config
    if arch not in ARCHS:
        raise ValueError(f'arch must be one of {ARCHS}, got {arch!r}')
    tiny = Config.fromfile(osp.join(ROOT, 'configs', 'icmsr_tiny.py'))
    cfg = tiny.model.to_dict()
    if arch == 'sd14':
        for key, typ in (('unet', 'SDUNet'), ('vae', 'SDVAE'), ('text_encoder', 'SDTextEncoder')):
            cfg[key] = dict(type=typ, from_config=copy.deepcopy(tiny[f'sd14_{key}'].to_dict()))
        adapters = [tiny.adapter_color_sd14.to_dict(), tiny.adapter_canny_sd14.to_dict()]
    else:
        adapters = [tiny.tiny_adapter_color.to_dict(), tiny.tiny_adapter_canny.to_dict()]
    cfg['condition'] = None if condition is None else dict(
        kind='multi', adapters=[dict(type='SDT2IAdapter', from_config=a) for a in adapters],
        weights=[1.0, 1.0], scale=1.0)
    cfg.update(copy.deepcopy(overrides))
    return cfg
