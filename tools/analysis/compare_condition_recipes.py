"""How far apart are two condition recipes on a folder of images?

Compares two ``ConditionExtractor`` recipes (default: the earlier ``antialiased8``
against TencentARC's ``tencentarc``) image by image:

* colormap: max and mean absolute difference, in 8-bit levels;
* Canny: intersection over union of the two edge maps.

Also reports how the on-device colormap compares with ``cv2`` itself (with the
build's default IPP setting), so the figures can be read with the tolerance.

Example::

    python tools/analysis/compare_condition_recipes.py --input ../shared/data/realsr/test_HR
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from icmsr.fileio.file_lists import scan_images  # noqa: E402
from icmsr.fileio.image_io import load_image_rgb  # noqa: E402
from icmsr.models.conditions import RECIPES, ConditionExtractor  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--input', required=True, help='folder of images')
    p.add_argument('--old', default='antialiased8', choices=sorted(RECIPES))
    p.add_argument('--new', default='tencentarc', choices=sorted(RECIPES))
    p.add_argument('--limit', type=int, default=0, help='first N images only (0: all)')
    return p.parse_args(argv)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two binary maps (1.0 when both are empty)."""
    a, b = a > 0.5, b > 0.5
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def compare(rgb: np.ndarray, old: ConditionExtractor, new: ConditionExtractor) -> Dict[str, float]:
    """Figures for one ``(H, W, 3)`` uint8 RGB image."""
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255
    (c_old, e_old), (c_new, e_new) = old(x), new(x)
    diff = (c_old - c_new).abs() * 255
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = rgb.shape[:2]
    gh, gw = new.grid_size(h, w)
    ref = cv2.resize(cv2.resize(bgr, (gw, gh), interpolation=cv2.INTER_CUBIC), (w, h),
                     interpolation=cv2.INTER_NEAREST)
    ref = torch.from_numpy(cv2.cvtColor(ref, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float()
    vs_cv2 = (c_new * 255 - ref).abs()
    return dict(colormap_max=diff.max().item(), colormap_mean=diff.mean().item(),
                canny_iou=iou(e_old, e_new), cv2_max=vs_cv2.max().item(),
                cv2_frac=(vs_cv2 > 0.5).float().mean().item())


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Print per-folder figures; returns them."""
    args = parse_args(argv)
    files = scan_images(args.input)
    if args.limit:
        files = files[:args.limit]
    if not files:
        raise SystemExit(f'no images under {args.input!r}')
    old = ConditionExtractor('multi', recipe=args.old)
    new = ConditionExtractor('multi', recipe=args.new)
    rows: List[Dict[str, float]] = []
    for rel in tqdm(files, desc='images', unit='img'):
        rows.append(compare(load_image_rgb(os.path.join(args.input, rel)), old, new))
    col = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    summary = dict(
        images=len(rows),
        colormap_max_levels=float(col['colormap_max'].max()),
        colormap_max_levels_median=float(np.median(col['colormap_max'])),
        colormap_mean_levels=float(col['colormap_mean'].mean()),
        canny_iou_mean=float(col['canny_iou'].mean()),
        canny_iou_min=float(col['canny_iou'].min()),
        canny_iou_max=float(col['canny_iou'].max()),
        new_vs_cv2_max_levels=float(col['cv2_max'].max()),
        new_vs_cv2_fraction_differing=float(col['cv2_frac'].mean()))
    print(f'{args.old} vs {args.new} on {len(rows)} images of {args.input} '
          f'(cv2 {cv2.__version__}, IPP {"on" if cv2.ipp.useIPP() else "off"}):')
    for key, value in summary.items():
        print(f'  {key:34s} {value:.4f}')
    return summary


if __name__ == '__main__':
    main()
