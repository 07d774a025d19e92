"""Utilities: tiling and blending, colour correction, atomic file writes."""
from .color_correction import adain_color_fix, color_fix, wavelet_color_fix  # noqa: F401
from .tiling import blend_window_1d, tile_starts, tiled_apply  # noqa: F401
