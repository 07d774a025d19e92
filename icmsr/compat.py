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
   :func:`trusted_checkpoint_loading` (``--trust-checkpoint`` of the tools),
   which sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the duration only.
   Everywhere else the toolkit loads inside :func:`untrusted_checkpoint_loading`,
   which *ignores* a ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` set in the user's
   environment: only our own flag relaxes pickle safety.
   :func:`checkpoint_refusal_message` turns torch's refusal into one line that
   names ``--trust-checkpoint`` (torch's own hint suggests ``weights_only=False``
   and carries terminal colour codes).
"""
import contextlib
import os
import re
import sys
from typing import Iterator, List, Optional

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


_FORCE_NO = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
_FORCE_YES = 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'
_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')


@contextlib.contextmanager
def _environment(values: dict) -> Iterator[None]:
    """Set (value) or unset (None) environment variables for the block, then restore them."""
    previous = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def trusted_checkpoint_loading() -> Iterator[None]:
    """Load checkpoints with full pickle inside this block (explicit opt-in).

    Only use it for files you trust: unpickling can execute arbitrary code.

    Yields:
        Nothing; the previous environment is restored on exit.
    """
    with _environment({_FORCE_NO: '1', _FORCE_YES: None}):
        yield


@contextlib.contextmanager
def untrusted_checkpoint_loading() -> Iterator[None]:
    """Load checkpoints with ``weights_only=True`` inside this block, whatever the environment.

    A ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` exported in the shell would make
    torch unpickle everything that MMEngine loads; inside this block torch is
    forced to the safe loader instead, so only ``--trust-checkpoint``
    (:func:`trusted_checkpoint_loading`) relaxes it.

    Yields:
        Nothing; the previous environment is restored on exit.
    """
    with _environment({_FORCE_NO: None, _FORCE_YES: '1'}):
        yield


def checkpoint_refusal_message(path: str, err: BaseException,
                               flag: Optional[str] = '--trust-checkpoint') -> str:
    """Explain a refused unpickling in the toolkit's words (no colour codes).

    Args:
        path: The checkpoint file.
        err: torch's ``UnpicklingError`` (or an error caused by one).
        flag: The command-line flag that opts in; None for the Python API.

    Returns:
        One message naming the file, the flag and torch's first reason line.
    """
    text = _ANSI.sub('', str(err))
    # torch's text is a paragraph about weights_only=False plus one line saying which
    # global was refused; keep only that line.
    reason = next((line.strip() for line in text.splitlines()
                   if any(k in line for k in ('GLOBAL', 'Unsupported', 'WeightsUnpickler'))), None)
    reason = reason or (text.splitlines()[0].strip() if text.strip() else type(err).__name__)
    how = (f'If you trust this file, pass {flag}.' if flag else
           'If you trust this file, load it inside icmsr.compat.trusted_checkpoint_loading().')
    return (f'Refusing to unpickle {path}: it contains objects outside the allow-list of '
            f'checkpoints written by icmsr, and unpickling them can run arbitrary code. {how} '
            f'(torch: {reason})')


def apply() -> None:
    """Apply every shim once; later calls do nothing."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_torchvision_functional_tensor()
    _allow_runner_checkpoints()
    _APPLIED = True
