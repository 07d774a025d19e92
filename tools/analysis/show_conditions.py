"""Save HQ | colormap | Canny | degraded LQ side by side for each input image.

A visual check of what the teacher is conditioned on (F_c) and of the
synthetic LQ the generator sees in training. Each image is resized (short
side) and centre-cropped to ``--size``; the LQ is shown enlarged with nearest
neighbours so its pixels stay visible.

Example::

    python tools/analysis/show_conditions.py --input /path/to/hr --output work_dirs/conditions
"""
import argparse
import os
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

import icmsr  # noqa: F401  (basicsr import shim)
from icmsr.degradations import RealESRGANDegradation
from icmsr.models.conditions import ConditionExtractor

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
LABELS = ('HQ', 'colormap', 'Canny', 'degraded LQ (x4 nearest)')
LABEL_HEIGHT = 24


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--input', required=True, help='an image file or a folder of images')
    p.add_argument('--output', required=True, help='folder for the PNG grids')
    p.add_argument('--size', type=int, default=512, help='HQ crop size (multiple of 4, >= 128)')
    p.add_argument('--seed', type=int, default=0, help='degradation seed (image i uses seed + i)')
    p.add_argument('--canny-low', type=float, default=100)
    p.add_argument('--canny-high', type=float, default=200)
    p.add_argument('--colormap-resize', choices=('cv2_bicubic', 'bicubic', 'area'),
                   default='cv2_bicubic')
    return p.parse_args(argv)


def list_images(path: str) -> List[str]:
    """The image files at ``path`` (a file or a folder), sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise SystemExit(f'--input {path!r} is neither an image file nor a folder.')
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTS))
    if not files:
        raise SystemExit(f'no images ({", ".join(IMAGE_EXTS)}) in {path!r}.')
    return files


def load_square(path: str, size: int) -> torch.Tensor:
    """Load RGB, resize the short side to ``size``, centre-crop; ``(1, 3, size, size)`` in [0, 1]."""
    img = Image.open(path).convert('RGB')
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255


def to_pil(x: torch.Tensor, size: int) -> Image.Image:
    """``(C, h, w)`` in [0, 1] (C = 1 or 3) to an RGB image enlarged to ``size`` (nearest)."""
    arr = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    img = Image.fromarray(arr)
    return img if img.size == (size, size) else img.resize((size, size), Image.NEAREST)


def make_grid(panels: Sequence[Image.Image], labels: Sequence[str]) -> Image.Image:
    """Panels side by side with a label strip above each."""
    w, h = panels[0].size
    grid = Image.new('RGB', (w * len(panels), h + LABEL_HEIGHT), 'white')
    draw = ImageDraw.Draw(grid)
    for i, (panel, label) in enumerate(zip(panels, labels)):
        grid.paste(panel, (i * w, LABEL_HEIGHT))
        draw.text((i * w + 6, 5), label, fill='black')
    return grid


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    """Write one grid per input image; returns the written paths."""
    args = parse_args(argv)
    if args.size % 4 or args.size < 128:
        raise SystemExit(f'--size must be a multiple of 4 and >= 128, got {args.size}.')
    files = list_images(args.input)
    os.makedirs(args.output, exist_ok=True)
    extractor = ConditionExtractor('multi', colormap_resize=args.colormap_resize,
                                   canny_low=args.canny_low, canny_high=args.canny_high)
    degradation = RealESRGANDegradation(resize_back=False)
    written = []
    for i, path in enumerate(tqdm(files, desc='conditions', unit='img')):
        hq = load_square(path, args.size)
        colormap, canny = extractor(hq)
        lq = degradation(hq, generator=torch.Generator().manual_seed(args.seed + i))['lq']
        panels = [to_pil(t[0], args.size) for t in (hq, colormap, canny, lq)]
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + '_conditions.png')
        make_grid(panels, LABELS).save(out)
        written.append(out)
    print(f'wrote {len(written)} grid(s) to {args.output}')
    return written


if __name__ == '__main__':
    main()
