"""Overlapping-tile processing with smooth blending.

A one-step SR network is trained on 512 px crops. Larger inputs are split into
overlapping tiles, each tile runs through the network on its own, and the
results are blended with weights that taper inside the overlaps. Because only
one tile (or ``tile_batch`` tiles) is in flight at a time, the activation memory
depends on the tile size, not on the image size (the full-size input and output
tensors are the only image-sized buffers). With a
:class:`~icmsr.utils.tile_context.WholeImageContext` every GroupNorm uses the
statistics of the whole image (and self-attention its keys and values), so the
tiles do not show.

The same routine serves the three stages of the generator:

* VAE encoder: pixels -> latent, ``scale = 1/8``;
* UNet denoiser: latent -> latent, ``scale = 1``;
* VAE decoder: latent -> pixels, ``scale = 8``.

Tile positions are computed on the coarser of the two grids so that every tile
maps to whole pixels on both sides.
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .tile_memory import AUTO
from .tile_context import LayerGathered, TileCore, WholeImageContext, core_bounds

BLEND_MODES = ('core', 'gaussian', 'cosine', 'constant')
VAE_FACTOR = 8  # SD's VAE downsamples by 8


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``.

    Tiles overlap by at least ``overlap``; the first starts at 0 and the last
    ends exactly at ``length``; the others are spread evenly in between.

    Args:
        length: Extent of the signal along one axis.
        tile: Tile extent (``>= 1``); a signal no longer than it is one tile.
        overlap: Minimum overlap between neighbours (``0 <= overlap < tile``).

    Returns:
        Sorted start offsets.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f'Need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}.')
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    last = length - tile
    return [round(i * last / (n - 1)) for i in range(n)]


def blend_window_1d(size: int, overlap: int, taper_start: bool, taper_end: bool,
                    mode: str = 'gaussian') -> torch.Tensor:
    """One-dimensional blending weight of a tile.

    Args:
        size: Tile extent on the output grid.
        overlap: Overlap with neighbours on the output grid (taper length for ``'cosine'``).
        taper_start: Whether the tile has a neighbour before it (image-border
            sides are not tapered, so pixels covered by one tile keep full weight).
        taper_end: Whether the tile has a neighbour after it.
        mode: ``'gaussian'`` (bell over the whole tile, sigma = size/4, shifted
            to 0 at tapered edges and held at its peak toward image borders),
            ``'cosine'`` (raised-cosine ramps over the overlap, flat elsewhere) or
            ``'constant'`` (plain averaging, which leaves visible steps).

    Returns:
        Float32 weights of shape ``(size,)``, strictly positive.
    """
    pos = torch.arange(size, dtype=torch.float64) + 0.5
    if mode == 'gaussian':
        # Shifted so it reaches 0 at the tile edge: a bell that stays positive
        # there would switch on abruptly where a tile starts and leave a step.
        sigma, centre = size / 4.0, size / 2.0
        bell = torch.exp(-0.5 * ((pos - centre) / sigma) ** 2)
        edge = math.exp(-0.5 * (centre / sigma) ** 2)
        w = (bell - edge) / (1.0 - edge)
        half = size // 2
        if not taper_start:
            w[:half] = 1.0
        if not taper_end:
            w[half:] = 1.0
        if not taper_start and not taper_end:
            w[:] = 1.0
    elif mode == 'cosine':
        w = torch.ones(size, dtype=torch.float64)
        ramp_len = max(1, min(overlap, size // 2))
        ramp = 0.5 - 0.5 * torch.cos(math.pi * pos[:ramp_len] / ramp_len)
        if taper_start:
            w[:ramp_len] = ramp
        if taper_end:
            w[size - ramp_len:] = torch.minimum(w[size - ramp_len:], ramp.flip(0))
    elif mode == 'constant':
        w = torch.ones(size, dtype=torch.float64)
    else:
        raise ValueError(f'Unknown blend mode {mode!r}; choose one of {BLEND_MODES}.')
    # A floor keeps the normalisation well defined where a ramp reaches ~0.
    return w.clamp_min(1e-3).float()


def core_window_1d(size: int, core: Tuple[int, int], ramp: int, taper_start: bool,
                   taper_end: bool) -> torch.Tensor:
    """Blending weight that keeps a tile to its core, with short steps where cores meet.

    With the whole image's context every tile computes nearly the whole image's values; what
    still differs is near a tile's edge, where zero padding cuts the receptive field. This
    window gives full weight to the tile's core (the middle of each overlap is where cores
    meet) and steps to neighbours with raised-cosine ramps of ``ramp`` centred there, so the
    outer half of each overlap gets no weight from the tile whose edge it is. Neighbours'
    ramps sum to 1.

    Args:
        size: Tile extent on the output grid.
        core: ``(begin, end)`` of the tile's core, relative to the tile.
        ramp: Length of each step (half the overlap).
        taper_start: Whether the tile has a neighbour before it.
        taper_end: Whether the tile has a neighbour after it.

    Returns:
        Float32 weights of shape ``(size,)``, strictly positive.
    """
    pos = torch.arange(size, dtype=torch.float64) + 0.5
    ramp = max(ramp, 1)

    def step(t: torch.Tensor) -> torch.Tensor:  # 0 -> 1 over t in [0, 1]
        return 0.5 - 0.5 * torch.cos(math.pi * t.clamp(0, 1))
    w = torch.ones(size, dtype=torch.float64)
    if taper_start:
        w = w * step((pos - core[0]) / ramp + 0.5)
    if taper_end:
        w = w * step((core[1] - pos) / ramp + 0.5)
    return w.clamp_min(1e-3).float()


def tiled_apply(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int,
                overlap: int, scale: float = 1.0, mode: str = 'gaussian',
                out_device: Optional[torch.device] = None,
                progress: Optional[Callable[[int, int], None]] = None,
                tile_batch: int = 1, norms: Optional[WholeImageContext] = None) -> torch.Tensor:
    """Run ``fn`` on overlapping tiles of ``x`` and blend the results.

    Args:
        x: Input ``(B, C, H, W)``.
        fn: Maps a tile ``(N, C, h, w)`` to ``(N, C', h * scale, w * scale)``; with
            ``tile_batch > 1`` it gets ``k <= tile_batch`` tiles stacked along the batch
            axis (``N = k * B``, tile-major).
        tile: Tile size in input pixels. When ``scale < 1`` it is rounded down
            to a multiple of ``1/scale``. When ``x`` fits in one tile, ``fn(x)``
            is returned directly.
        overlap: Minimum overlap in input pixels (rounded like ``tile``).
        scale: Output/input size ratio: 8 (decoder), 1, or 1/8 (encoder). Must
            be an integer or the reciprocal of one.
        mode: Blend window: ``'core'`` (:func:`core_window_1d`, for a network that sees the
            whole image's context) or one of :func:`blend_window_1d`'s.
        out_device: Where the image-sized output lives (default: ``x``'s device).
        progress: Called as ``progress(done, total)`` after each tile forward of each
            pass, in tiles (``total`` is the tile count; ``done`` reaches it with the last
            pass); an exception it raises stops the work.
        tile_batch: Tiles per call of ``fn``.
        norms: Whole-image context for the network ``fn`` runs
            (:class:`~icmsr.utils.tile_context.WholeImageContext`): its gather passes run
            over all tiles before the blended pass. None: each tile sees only itself.

    Returns:
        The blended output ``(B, C', H * scale, W * scale)`` in ``fn``'s dtype.
    """
    if x.dim() != 4:
        raise ValueError(f'tiled_apply expects (B, C, H, W), got shape {tuple(x.shape)}.')
    if tile_batch < 1:
        raise ValueError(f'tile_batch={tile_batch} must be >= 1.')
    up, down = (int(round(scale)), 1) if scale >= 1 else (1, int(round(1 / scale)))
    if abs(up / down - scale) > 1e-6:
        raise ValueError(f'scale must be an integer or 1/integer, got {scale}.')
    _, _, height, width = x.shape
    if height % down or width % down:
        raise ValueError(f'Input size {height}x{width} must be divisible by {down} for scale {scale}.')
    # Work on the coarse grid (input grid / down) so tiles map to whole pixels on both sides.
    gh, gw = height // down, width // down
    g_tile = max(1, tile // down)
    g_overlap = min(max(0, overlap // down), g_tile - 1)
    if gh <= g_tile and gw <= g_tile:
        out = fn(x)
        if progress is not None:
            progress(1, 1)
        return out if out_device is None else out.to(out_device)
    ys, xs = tile_starts(gh, g_tile, g_overlap), tile_starts(gw, g_tile, g_overlap)
    th, tw = min(g_tile, gh), min(g_tile, gw)
    cores_y, cores_x = core_bounds(ys, g_tile, gh), core_bounds(xs, g_tile, gw)
    tiles = [TileCore(gy, gx, th, tw, cy + cx) for gy, cy in zip(ys, cores_y)
             for gx, cx in zip(xs, cores_x)]
    chunks = [tiles[i:i + tile_batch] for i in range(0, len(tiles), tile_batch)]
    done = 0

    def run(chunk: List[TileCore]) -> torch.Tensor:
        batch = torch.cat([x[:, :, t.top * down:(t.top + th) * down,
                             t.left * down:(t.left + tw) * down] for t in chunk])
        if norms is not None:
            norms.set_tiles(chunk)
        piece = fn(batch)
        if piece.shape[-2:] != (th * up, tw * up):
            raise RuntimeError(
                f'Tile function returned spatial size {tuple(piece.shape[-2:])}, '
                f'expected {(th * up, tw * up)} for scale {scale}.')
        return piece

    def tick(count: int) -> None:
        # Reported in tiles: a tile is done when all its passes are, so ``total`` is the
        # tile count whatever the number of passes; called after every tile forward.
        nonlocal done
        for _ in range(count):
            done += 1
            if progress is not None:
                progress(done * len(tiles) // total, len(tiles))

    device = x.device if out_device is None else out_device
    # The blend weights are separable and so is their sum over the tile grid: two vectors
    # normalise the output, not a second image-sized buffer.
    def windows(starts: List[int], cores: List[Tuple[int, int]], size: int) -> List[torch.Tensor]:
        last = len(starts) - 1
        if mode == 'core':
            return [core_window_1d(size * up, ((c0 - s) * up, (c1 - s) * up), g_overlap * up // 2,
                                   i > 0, i < last)
                    for i, (s, (c0, c1)) in enumerate(zip(starts, cores))]
        return [blend_window_1d(size * up, g_overlap * up, i > 0, i < last, mode)
                for i in range(len(starts))]
    win_y, win_x = windows(ys, cores_y, th), windows(xs, cores_x, tw)
    sum_y, sum_x = torch.zeros(gh * up), torch.zeros(gw * up)
    for gy, w in zip(ys, win_y):
        sum_y[gy * up:(gy + th) * up] += w
    for gx, w in zip(xs, win_x):
        sum_x[gx * up:(gx + tw) * up] += w
    if norms is not None:
        norms.set_grid(gh, gw)
    with norms.attached() if norms is not None else contextlib.nullcontext():
        if norms is not None:  # one tile sizes the attention layers: which ones are shared
            norms.plan(lambda: run(chunks[0][:1]))
        passes = 0 if norms is None else norms.num_layers
        total = len(tiles) * (passes + 1)
        for layer in range(passes):
            norms.begin_gather(layer)
            for chunk in chunks:
                try:
                    run(chunk)
                except LayerGathered:  # the forward stops once the layer is counted
                    pass
                tick(len(chunk))
            norms.end_gather()
        out = None
        out_dtype = x.dtype
        for chunk in chunks:
            pieces = run(chunk)
            for k, t in enumerate(chunk):
                piece = pieces[k * x.shape[0]:(k + 1) * x.shape[0]]
                if out is None:
                    out_dtype = piece.dtype
                    out = torch.zeros(x.shape[0], piece.shape[1], gh * up, gw * up,
                                      device=device)
                iy, ix = ys.index(t.top), xs.index(t.left)
                w2d = (win_y[iy][:, None] * win_x[ix][None, :]).to(device)
                oy, ox = t.top * up, t.left * up
                out[:, :, oy:oy + th * up, ox:ox + tw * up] += piece.to(device, torch.float32) * w2d
            del pieces
            tick(len(chunk))
    # In place: no second image-sized buffer.
    return out.div_(sum_y.to(device)[:, None]).div_(sum_x.to(device)).to(out_dtype)


NORM_STATS = ('image', 'tile')


@dataclass
class TileSettings:
    """Tiling of the three generator stages, in output (HQ) pixels.

    Attributes:
        tile_size: Tile of the UNet stage (latent tile = ``tile_size / 8``). SD v1
            is trained at 512 px; larger tiles cost memory, smaller ones context.
            ``'auto'``: the largest tile whose measured working set fits ``max_memory``
            (the whole image when it fits; :mod:`icmsr.utils.tile_memory`).
        tile_overlap: Overlap of neighbouring UNet tiles.
        vae_tile_size: Tile of the VAE encoder and decoder (the decoder is the
            most memory-hungry stage; lower this first when memory is short), or ``'auto'``.
        vae_overlap: Overlap of neighbouring VAE tiles.
        blend: Blend window, one of :data:`icmsr.utils.tiling.BLEND_MODES`; None: ``'core'``
            with the whole image's context (``norm_stats='image'``), where tiles agree and only
            their edges differ, ``'gaussian'`` per tile, where tiles disagree and wide blends
            hide it.
        tile_batch: Tiles per network call (throughput on a GPU; memory grows with it).
        norm_stats: ``'image'``: every GroupNorm of the VAE and the UNet uses the
            statistics of the whole image, and their self-attention layers its keys and
            values (within ``attention_memory``), so tiles change the memory, not the
            picture (:mod:`icmsr.utils.tile_context`; one partial pass per shared layer);
            ``'tile'``: each tile sees only itself (faster, the tile grid shows).
        attention_memory: With ``norm_stats='image'``, GiB the whole-image keys and values
            of the shared self-attention layers may take, per network (VAE encoder, UNet,
            VAE decoder). Layers are shared smallest first while they fit; the others, and
            all at 0, attend within each tile. SD's VAE keeps 4 KiB per latent position in
            float32, so the default shares its attention up to about a 4 MP output (8 MP in
            float16); the UNet's deep layers are the smallest and stay shared the longest.
            The default keeps the peak memory of a 64 MP output within 1.5x the output image
            plus a tile's working set (docs/inference.md).
        max_memory: GiB an ``'auto'`` tile's working set may use; None: a share of the
            device's free memory (:func:`icmsr.utils.tile_memory.default_budget`).
    """

    tile_size: Union[int, str] = 512
    tile_overlap: int = 64
    vae_tile_size: Union[int, str] = 512
    vae_overlap: int = 64
    blend: Optional[str] = None
    tile_batch: int = 1
    norm_stats: str = 'image'
    attention_memory: float = 0.25
    max_memory: Optional[float] = None

    @property
    def blend_mode(self) -> str:
        """The blend window in use: ``blend``, or the one that suits ``norm_stats``."""
        if self.blend is not None:
            return self.blend
        return 'core' if self.norm_stats == 'image' else 'gaussian'

    def validate(self) -> None:
        """Raise ``ValueError`` naming the key on a setting the tiling cannot honour."""
        for name in ('tile_size', 'tile_overlap', 'vae_tile_size', 'vae_overlap'):
            value = getattr(self, name)
            if name.endswith('tile_size') and value == AUTO:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value % VAE_FACTOR:
                raise ValueError(f'{name}={value!r} must be a non-negative multiple of {VAE_FACTOR}'
                                 + (f" or {AUTO!r}." if name.endswith('tile_size') else '.'))
        for size, overlap in ((self.tile_size, self.tile_overlap), (self.vae_tile_size, self.vae_overlap)):
            if size != AUTO and size <= overlap:
                raise ValueError('Tile sizes must exceed their overlaps.')
        memory = self.max_memory
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float))
                                   or not memory > 0):
            raise ValueError(f'max_memory={memory!r} must be a positive number of GiB (or None).')
        if self.blend is not None and self.blend not in BLEND_MODES:
            raise ValueError(f'blend={self.blend!r}; choose one of {BLEND_MODES}.')
        if not isinstance(self.tile_batch, int) or self.tile_batch < 1:
            raise ValueError(f'tile_batch={self.tile_batch!r} must be an integer >= 1.')
        share = self.attention_memory
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not share >= 0:
            raise ValueError(f'attention_memory={share!r} must be a number of GiB >= 0.')
        if self.norm_stats not in NORM_STATS:
            raise ValueError(f'norm_stats={self.norm_stats!r}; choose one of {NORM_STATS}.')


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom/right of ``x`` so both sides are multiples of ``multiple``.

    Reflection keeps the border statistics natural; images too small to
    reflect fall back to edge replication.

    Args:
        x: ``(B, C, H, W)``.
        multiple: Target multiple.

    Returns:
        The padded tensor (``x`` itself when nothing is needed).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = 'reflect' if ph < h and pw < w else 'replicate'
    return F.pad(x, (0, pw, 0, ph), mode=mode)
