"""The largest tile that fits a memory budget, from a measured probe tile.

A probe tile runs through each stage once; forward hooks on every module record the
bytes it holds. The working set of a tile of ``p`` output pixels is then estimated as
``linear * p + quadratic * p**2``:

* ``linear``: twice the largest ``inputs + outputs`` of any single module, per probe
  pixel. A module's inputs and outputs are alive together; the factor 2 covers what sits
  beside them (a residual branch's input, an operator's temporaries). Weights are not
  counted: they do not depend on the tile.
* ``quadratic``: the score matrix of the largest self-attention (``batch * heads *
  tokens**2`` elements), per probe pixel squared; tokens grow with the tile, so this term
  grows with its square. Cross-attention scores (fixed prompt length) go to ``linear``.
  Only attention that holds its scores counts here: diffusers' ``AttnProcessor2_0`` (its
  default) calls PyTorch's ``scaled_dot_product_attention``, whose fused kernels (flash /
  memory-efficient on CUDA, flash on CPU) never hold them; measured on CPU for 16384 tokens,
  1 head of 64: 20 MiB of peak RSS against 2 GiB for the matrix product.

It is an upper bound of the activations. It does not count the allocator's cache or
fragmentation: the default budgets keep a safety margin for that.
"""
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
from diffusers.models.attention_processor import AttnProcessor2_0

AUTO = 'auto'
TILE_STEP = 64           # auto tiles are multiples of this many output pixels
CUDA_FREE_FRACTION = 0.8
CPU_AVAILABLE_FRACTION = 0.5


def default_budget(device: torch.device) -> float:
    """Bytes a tile's working set may use: a share of the device's free memory.

    Args:
        device: Where the networks run.

    Returns:
        ``0.8 *`` free CUDA memory, or ``0.5 *`` the available RAM on CPU (``MemAvailable``
        of ``/proc/meminfo``, else the available pages from ``os.sysconf``).
    """
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0] * CUDA_FREE_FRACTION
    try:
        with open('/proc/meminfo') as f:
            line = next(ln for ln in f if ln.startswith('MemAvailable:'))
        available = int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        available = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    return available * CPU_AVAILABLE_FRACTION


@dataclass
class TileCost:
    """Estimated working set of one tile of one image, ``linear * p + quadratic * p**2`` bytes.

    Attributes:
        linear: Bytes per output pixel.
        quadratic: Bytes per output pixel squared (self-attention scores).
    """

    linear: float
    quadratic: float

    def __call__(self, pixels: float) -> float:
        """Bytes for a tile of ``pixels`` output pixels."""
        return self.linear * pixels + self.quadratic * pixels ** 2


def _nbytes(obj: Any) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):  # diffusers' outputs are dicts too
        return sum(_nbytes(o) for o in obj.values())
    return 0


def measure_cost(net: nn.Module, run: Callable[[], Any], pixels: int) -> TileCost:
    """Run ``run()`` (one probe tile through ``net``) and measure its :class:`TileCost`.

    Args:
        net: The network whose modules are hooked.
        run: Runs the probe tile of one image.
        pixels: Output pixels of the probe tile.

    Returns:
        The per-pixel cost (see the module docstring for what it counts).
    """
    seen = dict(module=0, linear=0.0, quadratic=0.0)

    def hook(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        seen['module'] = max(seen['module'], _nbytes(args) + _nbytes(kwargs) + _nbytes(out))
        heads = getattr(module, 'heads', None)
        hidden = args[0] if args else kwargs.get('hidden_states')
        if not isinstance(heads, int) or not torch.is_tensor(hidden) \
                or isinstance(getattr(module, 'processor', None), AttnProcessor2_0):
            return  # no attention, or a fused kernel that never holds the scores
        tokens = hidden.shape[-2] * hidden.shape[-1] if hidden.dim() == 4 else hidden.shape[1]
        context = args[1] if len(args) > 1 else kwargs.get('encoder_hidden_states')
        keys = tokens if context is None else context.shape[1]
        scores = hidden.shape[0] * heads * tokens * keys * hidden.element_size()
        if context is None:
            seen['quadratic'] = max(seen['quadratic'], scores / pixels ** 2)
        else:
            seen['linear'] = max(seen['linear'], scores / pixels)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in net.modules()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return TileCost(2 * seen['module'] / pixels + seen['linear'], seen['quadratic'])


def largest_tile(cost: TileCost, height: int, width: int, overlap: int, budget: float,
                 copies: int = 1) -> int:
    """The largest tile (output pixels, a multiple of :data:`TILE_STEP`) whose cost fits.

    Args:
        cost: Per-image cost of the stage.
        height: Output height (padded).
        width: Output width (padded).
        overlap: The stage's tile overlap; the tile is larger.
        budget: Bytes allowed.
        copies: Images in flight at once (batch size times ``tile_batch``).

    Returns:
        A tile covering the whole image when that fits, else the largest that does, and at
        least the smallest tile above ``overlap`` (which may then exceed the budget).
    """
    whole = -(-max(height, width) // TILE_STEP) * TILE_STEP
    smallest = (overlap // TILE_STEP + 1) * TILE_STEP
    for tile in range(whole, smallest - 1, -TILE_STEP):
        if copies * cost(min(tile, height) * min(tile, width)) <= budget:
            return tile
    return smallest
