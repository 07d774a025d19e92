"""Compatibility shims applied once, on ``import icmsr``.

Two problems of the pinned stack are fixed here, deliberately and narrowly:

1. **basicsr 1.4.2 under torchvision >= 0.17.** basicsr imports
   ``torchvision.transforms.functional_tensor``, a module removed from
   torchvision. basicsr only uses ``rgb_to_grayscale`` from it, which
   ``torchvision.transforms.functional`` provides, so we alias the module name.

2. **Resuming MMEngine checkpoints under torch >= 2.6.** ``torch.load`` now
   defaults to ``weights_only=True``; MMEngine 0.10.7 calls it without the
   argument, and its checkpoints carry the message hub (``HistoryBuffer`` objects
   holding numpy arrays), so ``--resume`` fails with "Weights only load failed".

   Checkpoint policy: we do **not** turn pickle safety off. Instead we add to
   torch's allow-list exactly the types a checkpoint written by our own Runner
   contains (MMEngine's ``HistoryBuffer`` and the numpy array/scalar/dtype
   reconstructors), and make ``HistoryBuffer`` stop pickling its four built-in
   statistics functions (which would need ``builtins.getattr`` on the list; they
   are re-registered on load anyway). A checkpoint that holds anything else - for instance a file
   someone else produced that pickles arbitrary objects - still fails with
   torch's error. Users who trust such a file opt in explicitly with
   :func:`trusted_checkpoint_loading` (``tools/train.py --trust-checkpoint``),
   which sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the duration only.
"""
import contextlib
import os
import sys
from typing import Iterator, List

_APPLIED = False


def _alias_torchvision_functional_tensor() -> None:
    """Register ``torchvision.transforms.functional_tensor`` as an alias module."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms.functional as functional
        sys.modules[name] = functional


def runner_checkpoint_safe_globals() -> List[object]:
    """List the non-tensor types an MMEngine Runner writes into checkpoints.

    Returns:
        Classes and functions to pass to ``torch.serialization.add_safe_globals``.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    safe: List[object] = [HistoryBuffer, np.ndarray, np.dtype]
    # numpy moved its internals from numpy.core to numpy._core in 2.0.
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    safe += [_reconstruct, scalar]
    # Concrete dtype classes (Float64DType, Int64DType, ...) of numpy >= 1.25.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        safe += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return safe


def _slim_history_buffer_pickles() -> None:
    """Keep MMEngine's default statistics functions out of ``HistoryBuffer`` pickles.

    The original ``__getstate__`` stores ``min/max/mean/current`` by reference,
    which a ``weights_only`` load can only read with ``getattr`` allow-listed.
    ``__setstate__`` re-registers them, so only custom methods need saving.
    """
    from mmengine.logging import HistoryBuffer
    builtin = {'min', 'max', 'mean', 'current'}

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
        custom = {k: v for k, v in self._statistics_methods.items() if k not in builtin}
        if custom:
            state['statistics_methods'] = custom
        return state

    HistoryBuffer.__getstate__ = __getstate__


def _allow_runner_checkpoints() -> None:
    """Allow-list the types of our own Runner checkpoints for ``weights_only`` loads."""
    import torch
    _slim_history_buffer_pickles()
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 loads with full pickle anyway
        add(runner_checkpoint_safe_globals())


@contextlib.contextmanager
def trusted_checkpoint_loading() -> Iterator[None]:
    """Load checkpoints with full pickle inside this block (explicit opt-in).

    Only use it for files you trust: unpickling can execute arbitrary code.

    Yields:
        Nothing; the previous environment is restored on exit.
    """
    key = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
    previous = os.environ.get(key)
    os.environ[key] = '1'
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous


def apply() -> None:
    """Apply every shim once; later calls do nothing."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_torchvision_functional_tensor()
    _allow_runner_checkpoints()
    _APPLIED = True
