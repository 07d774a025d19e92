"""Whole-image GroupNorm statistics for tiled inference.

A network run tile by tile normalises every GroupNorm with the statistics of
the tile, so neighbouring tiles are normalised differently and the tile grid
shows as blocks of different tone. :class:`SharedGroupNorm` makes every tile
use the statistics of the whole image instead, while activations stay bounded
by the tile:

* it attaches forward hooks (public ``nn.Module`` API, removed on exit) to
  every ``nn.GroupNorm`` of the given modules, so it serves the diffusers VAE
  encoder and decoder and the UNet alike without knowing their code;
* in a *gather* pass each hooked norm adds, per image and group, the sum, the
  sum of squares and the count of its input over the tile's *core* (the part
  of the tile that no other tile owns: the overlaps are split at their middle),
  so every position of the whole image is counted exactly once and the
  positions next to a tile edge, whose activations suffer most from the
  tile's zero padding, are left to the neighbour that holds them in its middle;
* in an *apply* pass each norm normalises with those whole-image statistics.

The statistics of a later norm depend on activations normalised by the earlier
ones, so they are gathered layer by layer: pass ``k`` runs every tile up to the
``k``-th GroupNorm call (the earlier ones normalising with their whole-image
statistics), counts it and stops that forward; a final pass runs the tiles
through with all statistics fixed. With ``K`` GroupNorm layers that is ``K``
partial forwards plus one full forward per tile, and the statistics are those
of the whole image wherever the tile's activations are (docs/inference.md has
the cost and the measured alternatives).

Alternatives measured (tools/benchmarks/tiling.py, docs/inference.md):

* gather all layers in one pass under per-tile normalisation, then apply (or
  iterate that): the layers' statistics are mutually inconsistent, and the
  error compounds through the network; on the demo decoder it came out worse
  than per-tile statistics (25.7 vs 28.4 dB at 256 px tiles);
* run all tiles layer by layer up to each norm (OSEDiff's tiled VAE): one
  forward, but it holds the activations of every tile at once, i.e. memory that
  grows with the photo, and it needs the network's forward split into layers.
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

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
    """Raised by a gathering hook to end a tile's forward once its layer is counted."""


class SharedGroupNorm:
    """Normalise every ``nn.GroupNorm`` of some modules with whole-image statistics.

    Usage (what :func:`~icmsr.utils.tiling.tiled_apply` does)::

        norms = SharedGroupNorm([vae.decoder])
        with norms.attached():
            for layer in range(norms.num_layers):
                norms.begin_gather(layer)
                for tile ...:
                    norms.set_tiles([core])
                    try: fn(tile)
                    except LayerGathered: pass
                norms.end_gather()
            for tile ...: norms.set_tiles([core]); out = fn(tile)

    Tiles may be stacked along the batch axis (``set_tiles`` with several cores):
    rows ``[i * B, (i + 1) * B)`` of a call's batch are tile ``i`` of ``B`` images.

    Args:
        modules: Modules whose GroupNorm layers are shared (e.g. ``[vae.decoder]``);
            each layer must run once per forward, in the same order for every tile.
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.norms = [m for module in modules for m in module.modules()
                      if isinstance(m, nn.GroupNorm)]
        self.num_layers = len(self.norms)
        self._tiles: List[TileCore] = []
        self._gather: Optional[int] = None  # the layer call being gathered
        self._calls = 0
        self._sums: Optional[torch.Tensor] = None  # (3, B, G) float64
        self._stats: List[Tuple[torch.Tensor, torch.Tensor]] = []  # per call: mean, rstd (B, G)
        self._layers: List[nn.Module] = []  # the layer of each call, as gathered

    @contextlib.contextmanager
    def attached(self) -> Iterator['SharedGroupNorm']:
        """Hook the GroupNorm layers for the duration of the block.

        Yields:
            This object.
        """
        handles = [m.register_forward_hook(self._hook) for m in self.norms]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def begin_gather(self, layer: int) -> None:
        """Start gathering the statistics of the ``layer``-th GroupNorm call of a forward.

        Args:
            layer: Equals the number of calls gathered so far (they normalise this pass).
        """
        if layer != len(self._stats):
            raise ValueError(f'Gather layer {len(self._stats)} next, not {layer}.')
        self._gather, self._sums = layer, None

    def end_gather(self) -> None:
        """Turn the gathered sums into the whole-image ``mean`` and ``1/std`` of the layer."""
        if self._sums is None:
            raise RuntimeError(f'GroupNorm call {self._gather} was never reached: the network '
                               'runs fewer GroupNorm layers per forward than it holds.')
        total, square, count = self._sums
        mean = total / count
        var = (square / count - mean * mean).clamp_min(0)
        self._stats.append((mean.float(), torch.rsqrt(var + self._layers[-1].eps).float()))
        self._gather, self._sums = None, None

    def set_tiles(self, tiles: Sequence[TileCore]) -> None:
        """Announce the tile(s) of the next call of the network.

        Args:
            tiles: One :class:`TileCore` per stacked tile, in batch order.
        """
        self._tiles = list(tiles)
        self._calls = 0

    # ------------------------------------------------------------------ hook
    def _core_slices(self, tile: TileCore, height: int, width: int) -> Tuple[slice, slice]:
        # Grid -> layer coordinates; global rounding so that neighbours' cores meet exactly.
        ry, rx = height / tile.height, width / tile.width
        y0, y1, x0, x1 = tile.core
        oy, ox = round(tile.top * ry), round(tile.left * rx)
        rows = slice(max(0, round(y0 * ry) - oy), min(height, round(y1 * ry) - oy))
        cols = slice(max(0, round(x0 * rx) - ox), min(width, round(x1 * rx) - ox))
        return rows, cols

    def _spatial(self, x: torch.Tensor, tile: TileCore) -> torch.Tensor:
        # (N, C, L) inputs (attention blocks flatten the map first): recover (h, w) from the
        # tile's aspect ratio; anything else is already (N, C, h, w).
        if x.dim() == 4:
            return x
        if x.dim() == 3:
            length = x.shape[-1]
            h = round(math.sqrt(length * tile.height / tile.width))
            if h > 0 and length % h == 0:
                return x.reshape(*x.shape[:2], h, length // h)
        raise RuntimeError(f'GroupNorm input of shape {tuple(x.shape)} has no spatial layout '
                           'that matches the tile; it cannot be shared across tiles.')

    def _accumulate(self, module: nn.GroupNorm, x: torch.Tensor) -> None:
        batch = x.shape[0] // len(self._tiles)
        for i, tile in enumerate(self._tiles):
            spatial = self._spatial(x[i * batch:(i + 1) * batch], tile)
            rows, cols = self._core_slices(tile, spatial.shape[-2], spatial.shape[-1])
            core = spatial[:, :, rows, cols].reshape(batch, module.num_groups, -1).double()
            # A core may round to nothing on a coarse layer; its neighbours own those positions.
            part = torch.stack([core.sum(-1), core.square().sum(-1),
                                core.new_full(core.shape[:2], core.shape[-1])])
            self._sums = part if self._sums is None else self._sums + part

    def _hook(self, module: nn.GroupNorm, inputs: Tuple[torch.Tensor, ...],
              output: torch.Tensor) -> Optional[torch.Tensor]:
        if not self._tiles:
            return None  # a call outside tiled processing
        index, self._calls = self._calls, self._calls + 1
        x = inputs[0]
        if index == self._gather:
            if index == len(self._layers):
                self._layers.append(module)
            if self._layers[index] is not module:
                raise RuntimeError('The network called its GroupNorm layers in a different order '
                                   'for another tile; whole-image statistics cannot be shared.')
            self._accumulate(module, x)
            raise LayerGathered  # nothing after this layer is needed in this pass
        if index >= len(self._stats) or self._layers[index] is not module:
            raise RuntimeError('The network called a GroupNorm layer whose whole-image statistics '
                               'were not gathered (a layer run twice per forward, or in another '
                               'order); it cannot be shared across tiles.')
        n_tiles = len(self._tiles)
        mean, rstd = self._stats[index]
        mean, rstd = mean.repeat(n_tiles, 1), rstd.repeat(n_tiles, 1)
        flat = x.reshape(x.shape[0], module.num_groups, -1).float()
        normed = ((flat - mean[..., None]) * rstd[..., None]).reshape(x.shape)
        shape = (1, -1) + (1, ) * (x.dim() - 2)
        if module.affine:
            normed = torch.addcmul(module.bias.float().reshape(shape), normed,
                                   module.weight.float().reshape(shape))
        return normed.to(output.dtype)
