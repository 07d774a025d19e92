"""Reproducible use of BasicSR's degradation functions, which draw from global RNGs.

BasicSR's kernel samplers draw from Python's ``random`` and numpy's global
state, and its noise functions call ``torch.rand``/``torch.randn``/``torch.poisson``
without a generator. To keep BasicSR's exact sampling code *and* make every
draw come from a source the caller controls, :func:`borrowed_global_rngs`
seeds those global generators from one integer for the duration of a block and
restores their previous states afterwards, so code outside the block sees no
change. The block is not thread-safe (nothing using the global RNGs may run
concurrently in another thread of the same process); DataLoader workers are
separate processes and are unaffected.
"""
import contextlib
import random
from typing import Iterator, Optional

import numpy as np
import torch

_SEED_HIGH = 2**63 - 1


def draw_seed(generator: torch.Generator) -> int:
    """Draw a 63-bit seed from ``generator``.

    Args:
        generator: Any torch generator (CPU or accelerator).

    Returns:
        A non-negative Python int.
    """
    return int(torch.randint(0, _SEED_HIGH, (1,), generator=generator,
                             device=generator.device).item())


def _device_default_generator(device: torch.device) -> Optional[torch.Generator]:
    """Return the default generator ``torch.rand(..., device=device)`` uses.

    Args:
        device: The device the random tensors are created on.

    Returns:
        The generator, or ``None`` when the backend exposes no per-device
        generator object (then its module-level state functions are used).
    """
    if device.type == 'cpu':
        return torch.default_generator
    module = torch.get_device_module(device.type)
    generators = getattr(module, 'default_generators', None)
    if not generators:
        return None
    index = device.index if device.index is not None else module.current_device()
    return generators[index]


@contextlib.contextmanager
def borrowed_global_rngs(seed: int, device: torch.device) -> Iterator[None]:
    """Seed Python, numpy and torch (CPU and ``device``) RNGs; restore them on exit.

    Args:
        seed: Any non-negative int; each library gets a value derived from it.
        device: Device whose default torch generator is also seeded (CPU's is
            always seeded, since BasicSR builds kernels there).

    Yields:
        Nothing. Inside the block all global draws are a function of ``seed``.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    cpu_gen = torch.default_generator
    cpu_state = cpu_gen.get_state()
    dev_gen, dev_module, dev_state = None, None, None
    if device.type != 'cpu':
        dev_gen = _device_default_generator(device)
        if dev_gen is not None:
            dev_state = dev_gen.get_state()
        else:  # e.g. MPS: module-level state only
            dev_module = torch.get_device_module(device.type)
            dev_state = dev_module.get_rng_state()
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        cpu_gen.manual_seed(seed)
        if dev_gen is not None:
            dev_gen.manual_seed(seed)
        elif dev_module is not None:
            dev_module.manual_seed(seed)
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        cpu_gen.set_state(cpu_state)
        if dev_gen is not None:
            dev_gen.set_state(dev_state)
        elif dev_module is not None:
            dev_module.set_rng_state(dev_state)
