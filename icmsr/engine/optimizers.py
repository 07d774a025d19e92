"""Optional optimizers registered by name: ``optimizer=dict(type='AdamW8bit', lr=5e-5)``.

``AdamW8bit`` is bitsandbytes' AdamW with block-wise 8-bit moment estimates.
bitsandbytes is imported only when the optimizer is built, and one update of a
throw-away tensor on the parameters' device proves that its kernels run there;
a missing package or a build without a backend for that device fails at build
time with what to do, not with a kernel error deep inside the first iteration.
"""
from typing import Any, Iterable

import torch

from icmsr.registry import OPTIMIZERS

_FALLBACK = "or use optimizer=dict(type='AdamW', ...) instead"


def _probe(optimizer_cls: type, device: torch.device) -> None:
    """Run one 8-bit update on ``device``; raise a clear error when it cannot run."""
    # min_8bit_size=1 forces the quantized path even for this small tensor.
    weight = torch.nn.Parameter(torch.zeros(256, device=device))
    weight.grad = torch.ones_like(weight)
    try:
        optimizer_cls([weight], lr=1e-3, min_8bit_size=1).step()
    except Exception as err:  # any backend failure: missing kernels, driver, library
        import bitsandbytes
        raise RuntimeError(
            f"optimizer type='AdamW8bit': bitsandbytes {bitsandbytes.__version__} cannot run "
            f'its 8-bit optimizer on {device} ({type(err).__name__}: {str(err)[:200]}). '
            f'Install a build with a backend for this device (pip install -U bitsandbytes), '
            f'{_FALLBACK}.') from err


@OPTIMIZERS.register_module(name='AdamW8bit')
def build_adamw_8bit(params: Iterable[Any], lr: float = 1e-3, betas=(0.9, 0.999),
                     eps: float = 1e-8, weight_decay: float = 1e-2,
                     min_8bit_size: int = 4096, **kwargs: Any) -> torch.optim.Optimizer:
    """Build bitsandbytes' ``AdamW8bit`` after checking it runs on the parameters' device.

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate.
        betas: Adam's moment decay rates.
        eps: Adam's epsilon.
        weight_decay: Decoupled weight decay.
        min_8bit_size: Tensors with fewer elements keep 32-bit moments
            (bitsandbytes' default 4096; LoRA ``down``/``up`` matrices of linear
            layers are often smaller).
        **kwargs: Other ``bitsandbytes.optim.AdamW8bit`` arguments.

    Returns:
        The optimizer.

    Raises:
        ImportError: When bitsandbytes is not installed.
        RuntimeError: When its 8-bit kernels cannot run on the parameters' device.
    """
    try:
        from bitsandbytes.optim import AdamW8bit
    except ImportError as err:
        raise ImportError(f"optimizer type='AdamW8bit' needs bitsandbytes: pip install "
                          f'bitsandbytes, {_FALLBACK}.') from err
    params = list(params)
    if not params:
        raise ValueError("optimizer type='AdamW8bit' got no parameters.")
    first = params[0]['params'][0] if isinstance(params[0], dict) else params[0]
    _probe(AdamW8bit, first.device)
    return AdamW8bit(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                     min_8bit_size=min_8bit_size, **kwargs)
