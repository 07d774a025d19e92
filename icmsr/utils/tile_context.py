"""Whole-image context for tiled inference: GroupNorm statistics and self-attention.

A network run tile by tile sees only the tile: every GroupNorm normalises with the
statistics of the tile, and every self-attention attends over the tile's positions
only. Neighbouring tiles are then processed differently and the tile grid shows as
blocks of different tone. :class:`WholeImageContext` gives every tile the context of
the whole image instead, while the activations stay bounded by the tile:

* it attaches forward hooks (public ``nn.Module`` API, removed on exit) to every
  ``nn.GroupNorm`` of the given modules and, when asked, to the key and value
  projections (``to_k``, ``to_v``) of their diffusers self-attention layers, so it
  serves the VAE encoder and decoder and the UNet alike without knowing their code;
* in a *gather* pass the hook of one layer takes what the layer sees over the
  tile's *core* (the part of the tile no other tile owns: the overlaps are split
  at their middle), so every position of the whole image is counted exactly once
  and the positions next to a tile edge, whose activations suffer most from the
  tile's zero padding, are left to the neighbour that holds them in its middle.
  A GroupNorm keeps per-group sums, sums of squares and counts; a key or value
  projection keeps its output at the core positions, in an image-sized map;
* in the final pass each GroupNorm normalises with the whole-image statistics and
  each shared projection returns the keys or values of the whole image, so the
  tile's queries attend over every position (diffusers' attention processors take
  keys of another length than the queries, as in cross-attention).

What a later layer sees depends on the earlier layers, so the layers are gathered
one by one: pass ``k`` runs every tile up to the ``k``-th hooked call (the earlier
ones already using the whole image), takes it and stops that forward; a final
pass runs the tiles through with everything fixed. With ``K`` hooked calls that is
``K`` partial forwards plus one full forward per tile (docs/inference.md has the
cost and the measured alternatives).

Whole-image keys and values grow with the photo (SD's VAE: 4 KiB per latent
position in float32, about 5x the float32 output image; SD's UNet: sixteen
self-attention layers, about 90x the output image in all), so they are kept
within a budget, ``attention_memory`` bytes per network: one tile runs through
first to size every attention layer, and the layers are shared smallest first
(the UNet's deep, coarse ones) while their keys and values fit; the others
attend within each tile.

Alternatives measured (tools/benchmarks/tiling.py, docs/inference.md):

* gather all GroupNorm layers in one pass under per-tile normalisation, then
  apply: the layers' statistics are mutually inconsistent and the error
  compounds; on the demo decoder it came out worse than per-tile statistics
  (25.7 vs 28.4 dB at 256 px tiles);
* run all tiles layer by layer up to each norm (OSEDiff's tiled VAE): one
  forward, but it holds the activations of every tile at once, i.e. memory that
  grows with the photo, and it needs the network's forward split into layers.
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn


@dataclass
class TileCore:
    """Where a tile sits on the coarse tiling grid and which part of it the tile owns.

    Attributes:
        top: First row of the tile.
        left: First column of the tile.
        height: Tile rows.
        width: Tile columns.
        core: ``(y0, y1, x0, x1)``: the owned rows/columns, in grid coordinates.
    """

    top: int
    left: int
    height: int
    width: int
    core: Tuple[int, int, int, int]


def core_bounds(starts: Sequence[int], tile: int, length: int) -> List[Tuple[int, int]]:
    """Owned interval of each tile along one axis: overlaps split at their middle.

    Args:
        starts: Tile start offsets (sorted, from :func:`~icmsr.utils.tiling.tile_starts`).
        tile: Tile extent.
        length: Extent of the whole axis.

    Returns:
        ``(begin, end)`` per tile; together they partition ``[0, length)``.
    """
    cuts = [0] + [(b + a + min(tile, length)) // 2 for a, b in zip(starts, starts[1:])] + [length]
    return list(zip(cuts[:-1], cuts[1:]))


class LayerGathered(Exception):
    """Raised by a gathering hook to end a tile's forward once its layer is taken."""


def self_attention_layers(module: nn.Module) -> List[nn.Module]:
    """The diffusers self-attention layers of ``module`` (cross-attention left out).

    Args:
        module: Any network.

    Returns:
        Modules with ``to_q``/``to_k``/``to_v`` projections that attend over their own input.
    """
    return [m for m in module.modules()
            if all(hasattr(m, name) for name in ('to_q', 'to_k', 'to_v'))
            and not getattr(m, 'is_cross_attention', True)]


# What the final pass uses per hooked call: GroupNorm (mean, 1/std) of shape (B, G), or the
# whole-image keys/values (B, H * W, C).
_Context = Union[Tuple[torch.Tensor, torch.Tensor], torch.Tensor]


class WholeImageContext:
    """Give every tile the GroupNorm statistics (and attention keys/values) of the whole image.

    Usage (what :func:`~icmsr.utils.tiling.tiled_apply` does)::

        context = WholeImageContext([vae.decoder], attention_memory=2 ** 29)
        context.set_grid(height, width)
        with context.attached():
            context.plan(lambda: fn(first_tile))  # with set_tiles([its core]) before
            for layer in range(context.num_layers):
                context.begin_gather(layer)
                for tile ...:
                    context.set_tiles([core])
                    try: fn(tile)
                    except LayerGathered: pass
                context.end_gather()
            for tile ...: context.set_tiles([core]); out = fn(tile)

    Tiles may be stacked along the batch axis (``set_tiles`` with several cores):
    rows ``[i * B, (i + 1) * B)`` of a call's batch are tile ``i`` of ``B`` images.

    Args:
        modules: Modules whose layers are shared (e.g. ``[vae.decoder]``); each hooked
            layer must run once per forward, in the same order for every tile.
        attention_memory: Bytes the kept whole-image keys and values of all shared
            self-attention layers may take together; 0: every attention stays within its tile.
    """

    def __init__(self, modules: Sequence[nn.Module], attention_memory: float = 0) -> None:
        self.norms = [m for module in modules for m in module.modules()
                      if isinstance(m, nn.GroupNorm)]
        self.attentions = [attn for module in modules if attention_memory > 0
                           for attn in self_attention_layers(module)]
        self.attention_memory = attention_memory
        self._shared: Optional[List[nn.Module]] = None if self.attentions else []  # projections
        self._sizes: Optional[dict] = None  # projection -> whole-image bytes, while planning
        self._grid: Optional[Tuple[int, int]] = None
        self._tiles: List[TileCore] = []
        self._gather: Optional[int] = None  # the hooked call being gathered
        self._calls = 0
        self._taken: Optional[torch.Tensor] = None  # sums (3, B, G) or a (B, H, W, C) map
        self._context: List[_Context] = []  # per hooked call, as gathered
        self._layers: List[nn.Module] = []  # the layer of each call, as gathered

    @contextlib.contextmanager
    def attached(self) -> Iterator['WholeImageContext']:
        """Hook the layers for the duration of the block.

        Yields:
            This object.
        """
        projections = [p for attn in self.attentions for p in (attn.to_k, attn.to_v)]
        handles = [m.register_forward_hook(self._hook) for m in self.norms + projections]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def set_grid(self, height: int, width: int) -> None:
        """Size of the whole image on the tiling grid (tile coordinates refer to it).

        Args:
            height: Grid rows.
            width: Grid columns.
        """
        self._grid = (height, width)

    @property
    def num_layers(self) -> int:
        """Hooked calls per forward, one gather pass each (known once :meth:`plan` ran)."""
        if self._shared is None:
            raise RuntimeError('Call plan() first: which attention layers are shared '
                               'depends on the image size.')
        return len(self.norms) + len(self._shared)

    def plan(self, run_tile: Callable[[], Any]) -> None:
        """Size the attention layers on one tile and choose the ones to share.

        Args:
            run_tile: Runs one tile through the network (its core announced with
                :meth:`set_tiles`, the grid with :meth:`set_grid`); every layer normalises and
                attends within the tile during this run.
        """
        if self._shared is not None:
            return
        self._sizes = {}
        try:
            run_tile()
        finally:
            sizes, self._sizes = self._sizes, None
        budget = self.attention_memory
        pairs = [(sizes.get(a.to_k, 0) + sizes.get(a.to_v, 0), i)
                 for i, a in enumerate(self.attentions)]
        chosen = set()
        for size, i in sorted(pairs):  # smallest first: the most layers for the budget
            if 0 < size <= budget:
                budget -= size
                chosen.add(i)
        # Forward order, as the hooks meet them.
        self._shared = [p for i, a in enumerate(self.attentions) if i in chosen
                        for p in (a.to_k, a.to_v)]

    def begin_gather(self, layer: int) -> None:
        """Start gathering the ``layer``-th hooked call of a forward.

        Args:
            layer: Equals the number of calls gathered so far (they use the whole image
                in this pass).
        """
        if layer != len(self._context):
            raise ValueError(f'Gather layer {len(self._context)} next, not {layer}.')
        self._gather, self._taken = layer, None

    def end_gather(self) -> None:
        """Turn what the gather pass took into the layer's whole-image context."""
        if self._taken is None:
            raise RuntimeError(f'Hooked call {self._gather} was never reached: the network '
                               'runs fewer shared layers per forward than it holds.')
        layer = self._layers[-1]
        if isinstance(layer, nn.GroupNorm):
            total, square, count = self._taken
            mean = total / count
            var = (square / count - mean * mean).clamp_min(0)
            self._context.append((mean.float(), torch.rsqrt(var + layer.eps).float()))
        else:
            self._context.append(self._taken.flatten(1, 2))
        self._gather, self._taken = None, None

    def attention_summary(self) -> Tuple[int, int, int]:
        """What the gathered attention layers share (for reports and benchmarks).

        Returns:
            ``(shared, within_tile, bytes)``: key/value projections that use the whole
            image, those that stay within the tile, and the bytes of the kept keys/values.
        """
        shared = [c for c, m in zip(self._context, self._layers) if not isinstance(m, nn.GroupNorm)]
        return (len(shared), 2 * len(self.attentions) - len(shared),
                sum(c.numel() * c.element_size() for c in shared))

    def set_tiles(self, tiles: Sequence[TileCore]) -> None:
        """Announce the tile(s) of the next call of the network.

        Args:
            tiles: One :class:`TileCore` per stacked tile, in batch order.
        """
        self._tiles = list(tiles)
        self._calls = 0

    # ------------------------------------------------------------------ hook
    @staticmethod
    def _scaled(tile: TileCore, height: int, width: int) -> Tuple[int, int, slice, slice]:
        # Grid -> layer coordinates; global rounding so that neighbours' cores meet exactly.
        # Returns the tile's offset in the layer's image and its core within the tile.
        ry, rx = height / tile.height, width / tile.width
        y0, y1, x0, x1 = tile.core
        oy, ox = round(tile.top * ry), round(tile.left * rx)
        rows = slice(max(0, round(y0 * ry) - oy), min(height, round(y1 * ry) - oy))
        cols = slice(max(0, round(x0 * rx) - ox), min(width, round(x1 * rx) - ox))
        return oy, ox, rows, cols

    @staticmethod
    def _hw(length: int, tile: TileCore, shape: Tuple[int, ...]) -> Tuple[int, int]:
        # Flattened positions (attention layers flatten the map): recover (h, w) from the
        # tile's aspect ratio.
        h = round(math.sqrt(length * tile.height / tile.width))
        if h > 0 and length % h == 0:
            return h, length // h
        raise RuntimeError(f'Layer input of shape {shape} has no spatial layout that matches '
                           'the tile; it cannot be shared across tiles.')

    def _take_norm(self, module: nn.GroupNorm, x: torch.Tensor) -> None:
        batch = x.shape[0] // len(self._tiles)
        for i, tile in enumerate(self._tiles):
            part = x[i * batch:(i + 1) * batch]
            if part.dim() == 3:  # (N, C, L)
                part = part.reshape(*part.shape[:2], *self._hw(part.shape[-1], tile, x.shape))
            _, _, rows, cols = self._scaled(tile, part.shape[-2], part.shape[-1])
            core = part[:, :, rows, cols].reshape(batch, module.num_groups, -1).double()
            # A core may round to nothing on a coarse layer; its neighbours own those positions.
            sums = torch.stack([core.sum(-1), core.square().sum(-1),
                                core.new_full(core.shape[:2], core.shape[-1])])
            self._taken = sums if self._taken is None else self._taken + sums

    def _image_shape(self, y: torch.Tensor, tile: TileCore) -> Tuple[int, int, int, int]:
        # (h, w) of the tile's (N, L, C) projection and (height, width) of the whole image's.
        h, w = self._hw(y.shape[1], tile, y.shape)
        return h, w, round(self._grid[0] * h / tile.height), round(self._grid[1] * w / tile.width)

    def _take_projection(self, y: torch.Tensor) -> None:
        batch = y.shape[0] // len(self._tiles)
        for i, tile in enumerate(self._tiles):
            h, w, height, width = self._image_shape(y, tile)
            if self._taken is None:
                self._taken = y.new_zeros(batch, height, width, y.shape[-1])
            oy, ox, rows, cols = self._scaled(tile, h, w)
            part = y[i * batch:(i + 1) * batch].reshape(batch, h, w, -1)
            self._taken[:, oy + rows.start:oy + rows.stop, ox + cols.start:ox + cols.stop] = \
                part[:, rows, cols]

    def _normalise(self, module: nn.GroupNorm, x: torch.Tensor, mean: torch.Tensor,
                   rstd: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        n_tiles = len(self._tiles)
        mean, rstd = mean.repeat(n_tiles, 1), rstd.repeat(n_tiles, 1)
        flat = x.reshape(x.shape[0], module.num_groups, -1).float()
        normed = ((flat - mean[..., None]) * rstd[..., None]).reshape(x.shape)
        shape = (1, -1) + (1, ) * (x.dim() - 2)
        if module.affine:
            normed = torch.addcmul(module.bias.float().reshape(shape), normed,
                                   module.weight.float().reshape(shape))
        return normed.to(dtype)

    def _hook(self, module: nn.Module, inputs: Tuple[torch.Tensor, ...],
              output: torch.Tensor) -> Optional[torch.Tensor]:
        if not self._tiles:
            return None  # a call outside tiled processing
        if self._sizes is not None:  # planning: size the projections, change nothing
            if not isinstance(module, nn.GroupNorm):
                _, _, height, width = self._image_shape(output, self._tiles[0])
                batch = output.shape[0] // len(self._tiles)
                self._sizes[module] = batch * height * width * output.shape[-1] * output.element_size()
            return None
        if not isinstance(module, nn.GroupNorm) and module not in self._shared:
            return None  # an attention that stays within the tile: not a shared layer
        index, self._calls = self._calls, self._calls + 1
        if index == self._gather:
            if index == len(self._layers):
                self._layers.append(module)
            if self._layers[index] is not module:
                raise RuntimeError('The network called its shared layers in a different order '
                                   'for another tile; the whole image cannot be shared.')
            if isinstance(module, nn.GroupNorm):
                self._take_norm(module, inputs[0])
            else:
                self._take_projection(output)
            raise LayerGathered  # nothing after this layer is needed in this pass
        if index >= len(self._context) or self._layers[index] is not module:
            raise RuntimeError('The network called a shared layer whose whole-image context was '
                               'not gathered (a layer run twice per forward, or in another '
                               'order); it cannot be shared across tiles.')
        context = self._context[index]
        if isinstance(module, nn.GroupNorm):
            return self._normalise(module, inputs[0], *context, output.dtype)
        # Stacked tiles share one copy (a view): the kept keys/values stay within the budget.
        return context.expand(len(self._tiles), -1, -1).to(output.dtype)
