"""Helpers shared by the inference tests (a uniquely named module: conftest names clash across folders)."""
import os

import numpy as np
import torch
from PIL import Image


def randomize_lora(generator, seed: int = 0, std: float = 0.05) -> None:
    """Give every LoRA branch (zero-initialised 'up') and conv_in non-trivial weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in generator.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)


def write_png(path: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Write a random RGB PNG (folders created) and return its pixels."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr
