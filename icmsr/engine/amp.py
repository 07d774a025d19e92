"""bf16 mixed precision without a loss scaler, on any device, with the non-finite guard.

MMEngine's ``AmpOptimWrapper`` is built around fp16: it always creates a CUDA
``GradScaler`` and refuses to start without a GPU. bfloat16 has float32's
exponent range, so its gradients need no scaling; what it needs is autocast on
the device the model is on, and the guard's full check (loss *and* gradients),
since no scaler is there to drop an overflowing step.
:class:`AutocastNonFiniteGuardOptimWrapper` is exactly that: the guarded plain
wrapper whose ``optim_context`` also enters ``torch.autocast`` for the model's
device type. The same config therefore trains in bf16 on a GPU and on a CPU.
"""
import contextlib
from typing import Iterator, Union

import torch
import torch.nn as nn

from icmsr.registry import OPTIM_WRAPPERS
from .nan_guard import NonFiniteGuardOptimWrapper

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float32': torch.float32}


def _device_type(model: nn.Module) -> str:
    """``'cuda'``/``'cpu'``/... of the model's first parameter (``'cpu'`` without any)."""
    param = next(model.parameters(), None)
    return 'cpu' if param is None else param.device.type


@OPTIM_WRAPPERS.register_module()
class AutocastNonFiniteGuardOptimWrapper(NonFiniteGuardOptimWrapper):
    """Guarded ``OptimWrapper`` whose forward passes run under ``torch.autocast(dtype)``.

    Parameters and optimizer states stay float32 (the LoRA weights are the only
    trained tensors); matmuls and convolutions inside ``optim_context`` run in
    ``dtype``. Steps with a non-finite loss or gradient are skipped as by
    :class:`NonFiniteGuardOptimWrapper`.

    Example::

        generator=dict(type='AutocastNonFiniteGuardOptimWrapper', dtype='bfloat16',
                       optimizer=dict(type='AdamW', lr=5e-5), clip_grad=dict(max_norm=1.0))

    Args:
        dtype: ``'bfloat16'`` (default) or ``'float32'`` (autocast off). float16
            needs dynamic loss scaling: use ``AmpNonFiniteGuardOptimWrapper``.
        **kwargs: Arguments of :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16', **kwargs) -> None:
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).replace('torch.', '')
        if dtype not in _DTYPES:
            raise ValueError(
                f'AutocastNonFiniteGuardOptimWrapper: dtype {dtype!r} is not supported; use '
                f"'bfloat16' (or 'float32' to disable autocast). For float16 use "
                f"type='AmpNonFiniteGuardOptimWrapper' (it scales the loss).")
        super().__init__(**kwargs)
        self.cast_dtype = _DTYPES[dtype]

    @contextlib.contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """Gradient-accumulation context of MMEngine plus autocast on the model's device.

        Args:
            model: The module whose forward runs inside the context.

        Yields:
            Nothing.
        """
        enabled = self.cast_dtype != torch.float32
        with super().optim_context(model), torch.autocast(
                device_type=_device_type(model), dtype=self.cast_dtype, enabled=enabled):
            yield
