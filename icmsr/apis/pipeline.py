"""Tiled one-step super-resolution of one image of any size.

The generator runs in three stages (VAE encoder, one UNet step, VAE decoder).
Each stage is run through :func:`icmsr.utils.tiling.tiled_apply`, so an image
larger than the model's native size (512 px output, 64 px latent for SD v1)
is processed in overlapping tiles blended with smooth weights, and the peak
activation memory is set by the tile size. An image that fits in one tile goes
through the plain, untiled path.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from icmsr.utils.color_correction import COLOR_FIX_MODES, color_fix
from icmsr.utils.tiling import BLEND_MODES, tiled_apply

VAE_FACTOR = 8  # SD's VAE downsamples by 8


@dataclass
class TileSettings:
    """Tiling of the three generator stages, in output (HQ) pixels.

    Attributes:
        tile_size: Tile of the UNet stage (latent tile = ``tile_size / 8``). SD v1
            is trained at 512 px; larger tiles cost memory, smaller ones context.
        tile_overlap: Overlap of neighbouring UNet tiles.
        vae_tile_size: Tile of the VAE encoder and decoder (the decoder is the
            most memory-hungry stage; lower this first when memory is short).
        vae_overlap: Overlap of neighbouring VAE tiles.
        blend: Blend window, one of :data:`icmsr.utils.tiling.BLEND_MODES`.
    """

    tile_size: int = 512
    tile_overlap: int = 64
    vae_tile_size: int = 512
    vae_overlap: int = 64
    blend: str = 'gaussian'

    def validate(self) -> None:
        """Raise ``ValueError`` on sizes the VAE grid cannot honour."""
        for name in ('tile_size', 'tile_overlap', 'vae_tile_size', 'vae_overlap'):
            value = getattr(self, name)
            if value < 0 or value % VAE_FACTOR:
                raise ValueError(f'{name}={value} must be a non-negative multiple of {VAE_FACTOR}.')
        if self.tile_size <= self.tile_overlap or self.vae_tile_size <= self.vae_overlap:
            raise ValueError('Tile sizes must exceed their overlaps.')
        if self.blend not in BLEND_MODES:
            raise ValueError(f'blend={self.blend!r}; choose one of {BLEND_MODES}.')


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


class TiledSuperResolver:
    """Run a ``OneStepGenerator`` on one LQ image of any size.

    Args:
        generator: Object with ``encode(x[-1,1]) -> z``, ``denoise(z, embeds) -> z0``
            and ``decode(z0) -> img[-1,1]`` (``icmsr.models.OneStepGenerator``).
        encode_prompts: Maps a list of prompts to text embeddings ``(B, 77, D)``.
        scale: Upscaling factor (the LQ is resized by it before encoding, as in training).
        tiles: Tiling settings.
        color_fix: ``'none'``, ``'adain'`` or ``'wavelet'`` (toward the LQ input).
        pad_multiple: The resized input is padded to a multiple of this (64 keeps
            every UNet level of SD v1 at an integer size), and the output cropped back.
        upsample_mode: Interpolation used to bring the LQ to the output size.
    """

    def __init__(self, generator: torch.nn.Module, encode_prompts: Callable, scale: int = 4,
                 tiles: Optional[TileSettings] = None, color_fix: str = 'none',
                 pad_multiple: int = 64, upsample_mode: str = 'bicubic') -> None:
        if color_fix not in COLOR_FIX_MODES:
            raise ValueError(f'color_fix={color_fix!r}; choose one of {COLOR_FIX_MODES}.')
        if pad_multiple % VAE_FACTOR:
            raise ValueError(f'pad_multiple must be a multiple of {VAE_FACTOR}, got {pad_multiple}.')
        self.generator = generator
        self.encode_prompts = encode_prompts
        self.scale = scale
        self.tiles = tiles or TileSettings()
        self.tiles.validate()
        self.color_fix = color_fix
        self.pad_multiple = pad_multiple
        self.upsample_mode = upsample_mode
        self.progress: Optional[Callable[[str, int, int], None]] = None

    def _stage_progress(self, stage: str) -> Optional[Callable[[int, int], None]]:
        if self.progress is None:
            return None
        return lambda done, total: self.progress(stage, done, total)

    @torch.no_grad()
    def __call__(self, lq: torch.Tensor, prompt: str = '') -> torch.Tensor:
        """Super-resolve one image.

        Args:
            lq: ``(1, 3, h, w)`` or ``(3, h, w)`` float in ``[0, 1]``.
            prompt: Text prompt.

        Returns:
            ``(1, 3, h * scale, w * scale)`` float32 in ``[0, 1]`` on the generator's device.
        """
        if lq.dim() == 3:
            lq = lq.unsqueeze(0)
        if lq.dim() != 4 or lq.shape[1] != 3:
            raise ValueError(f'Expected an RGB image (1, 3, h, w), got shape {tuple(lq.shape)}.')
        device = next(self.generator.parameters()).device
        lq = lq.to(device, torch.float32)
        out_h, out_w = lq.shape[-2] * self.scale, lq.shape[-1] * self.scale
        up = lq if self.scale == 1 else F.interpolate(
            lq, size=(out_h, out_w), mode=self.upsample_mode,
            align_corners=False if self.upsample_mode in ('bilinear', 'bicubic') else None)
        x = pad_to_multiple(up.clamp(0, 1) * 2 - 1, self.pad_multiple)
        del up  # image-sized buffers are the only ones that grow with the input: keep few
        embeds = self.encode_prompts([prompt])
        t = self.tiles
        z_l = tiled_apply(x, self.generator.encode, t.vae_tile_size, t.vae_overlap,
                          scale=1 / VAE_FACTOR, mode=t.blend, progress=self._stage_progress('encode'))
        z0 = tiled_apply(
            z_l, lambda z: self.generator.denoise(z, embeds.expand(z.shape[0], -1, -1)),
            t.tile_size // VAE_FACTOR, t.tile_overlap // VAE_FACTOR, scale=1, mode=t.blend,
            progress=self._stage_progress('denoise'))
        img = tiled_apply(z0, self.generator.decode, t.vae_tile_size // VAE_FACTOR,
                          t.vae_overlap // VAE_FACTOR, scale=VAE_FACTOR, mode=t.blend,
                          progress=self._stage_progress('decode'))
        del x, z_l, z0
        sr = img.float()[..., :out_h, :out_w].add_(1).div_(2).clamp_(0, 1)
        return color_fix(sr, lq, self.color_fix)
