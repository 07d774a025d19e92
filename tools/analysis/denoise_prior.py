"""The teacher's one-step denoised prediction, text- vs image-conditioned (the paper's Figure 2).

For each image and timestep ``t`` the ground-truth latent ``z0`` is noised,
``z_t = a_t z0 + b_t eps`` (one ``eps`` per image and ``t``, shared by every
condition), and the frozen teacher predicts ``x0 = (z_t - b_t eps_hat) / a_t``
with classifier-free guidance against the negative prompt, as the ICM
regulariser does. Rows of the grid:

* ``text``     - text prompt only (OSEDiff's manifold);
* ``colormap`` - + the colour T2I-Adapter on the 8x8 colormap;
* ``canny``    - + the Canny T2I-Adapter on the edge map;
* ``multi``    - + both adapters (ICM-SR's default).

Usage::

    python tools/analysis/denoise_prior.py --config configs/icmsr_multi.py \\
        --images hr/0001.png hr/0002.png --timesteps 200 500 800 980 --out work_dirs/fig2

Writes ``<out>/<image stem>.png`` (labelled grid: GT and conditions | columns = t)
and ``<out>/denoise_prior.json`` with the latent RMSE of each prediction to ``z0``.
"""
import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

CONDITIONS = ('text', 'colormap', 'canny', 'multi')


class DenoisePrior:
    """The teacher (frozen UNet + T2I-Adapters), VAE, text encoder and condition extractors.

    Args:
        model_cfg: An ``ICMSR`` model config (its ``unet``, ``vae``, ``scheduler``,
            ``text_encoder``, ``tokenizer``, ``condition`` and ``regularizer`` entries are used).
        adapter_color: Override/add the colour adapter (hub id or folder).
        adapter_canny: Override/add the Canny adapter (hub id or folder).
        device: Device.
        cfg_scale: Guidance scale (default: the regulariser's).
    """

    def __init__(self, model_cfg: Dict[str, Any], adapter_color: Optional[str] = None,
                 adapter_canny: Optional[str] = None, device: str = 'cpu',
                 cfg_scale: Optional[float] = None) -> None:
        from icmsr.models import ConditionExtractor, TeacherCondition, VSDRegularizer
        from icmsr.models.lora import LoRARoles
        from icmsr.registry import MODELS
        build = MODELS.build
        self.device = device
        self.unet = build(dict(model_cfg['unet'])).to(device).eval()
        self.vae = build(dict(model_cfg['vae'])).to(device).eval()
        sched = build(dict(model_cfg['scheduler']))
        # Only the negative prompt matters here (prompts come from --prompt): no tagger.
        negative = (model_cfg.get('text') or {}).get('negative_prompt')
        text_cfg = dict(type='PromptEncoder', source='empty', text_encoder=model_cfg['text_encoder'],
                        tokenizer=model_cfg['tokenizer'])
        if negative is not None:
            text_cfg['negative_prompt'] = negative
        self.text = build(text_cfg).to(device)
        reg_cfg = dict(model_cfg.get('regularizer') or {})
        scale = float(reg_cfg.get('cfg_scale', 7.5) if cfg_scale is None else cfg_scale)
        # The teacher of every row: one frozen UNet; the rows differ in the adapter features.
        self.teacher = VSDRegularizer(self.unet, sched, LoRARoles(), cfg_scale=scale).to(device)
        cond_cfg = dict(model_cfg.get('condition') or {})
        self.conditions = {
            kind: TeacherCondition(kind, adapters, weights=cond_cfg.get('weights') if kind == 'multi'
                                   else None, scale=cond_cfg.get('scale', 1.0)).to(device)
            for kind, adapters in self._adapters(cond_cfg, adapter_color, adapter_canny, build).items()}
        self.extractor = ConditionExtractor(mode='multi', **dict(cond_cfg.get('extractor') or {}))
        self.scheduler = sched

    @staticmethod
    def _adapters(cond_cfg: Dict[str, Any], color: Optional[str], canny: Optional[str],
                  build) -> Dict[str, list]:
        """``{condition kind: [adapter modules]}`` for every kind the available adapters allow."""
        found: Dict[str, Any] = {}
        for adapter_cfg in cond_cfg.get('adapters') or []:
            part = build(dict(adapter_cfg))
            found['colormap' if part.config.in_channels == 3 else 'canny'] = part
        for kind, path in (('colormap', color), ('canny', canny)):
            if path is not None:
                found[kind] = build(dict(type='SDT2IAdapter', from_pretrained=path))
        out = {kind: [found[kind]] for kind in ('colormap', 'canny') if kind in found}
        if 'colormap' in found and 'canny' in found:
            out['multi'] = [found['colormap'], found['canny']]
        return out

    @torch.no_grad()
    def encode(self, hq: torch.Tensor) -> torch.Tensor:
        """Scaled latent mode of an image in ``[0, 1]``."""
        dist = self.vae.encode(hq.to(self.device) * 2 - 1).latent_dist
        return dist.mode() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image in ``[0, 1]`` from scaled latents."""
        return ((self.vae.decode(z / self.vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)

    def condition_inputs(self, hq: torch.Tensor) -> Dict[str, Any]:
        """Adapter inputs of every condition, computed from the GT image."""
        colormap, canny = self.extractor(hq.to(self.device))
        return dict(text=None, colormap=colormap, canny=canny, multi=[colormap, canny])

    @torch.no_grad()
    def predict(self, hq: torch.Tensor, timesteps: Sequence[int], prompt: str = '', seed: int = 0,
                conditions: Sequence[str] = CONDITIONS) -> Dict[str, Any]:
        """One-step x0 predictions of the teacher for every condition and timestep.

        Args:
            hq: ``(1, 3, H, W)`` in ``[0, 1]``, sides multiples of 8.
            timesteps: Diffusion timesteps in ``[0, 1000)``.
            prompt: Text prompt.
            seed: Seed of the noise.
            conditions: Subset of :data:`CONDITIONS` (unavailable ones raise).

        Returns:
            ``{'z0', 'images': {cond: [img per t]}, 'rmse': {cond: [latent RMSE per t]}, 'cond_inputs'}``.
        """
        from icmsr.models.diffusion import add_noise, x0_from_eps
        missing = [c for c in conditions if c != 'text' and c not in self.conditions]
        if missing:
            raise ValueError(f'No adapter for {missing}: the config has none; pass --adapter-color / '
                             '--adapter-canny (e.g. TencentARC/t2iadapter_color_sd14v1).')
        z0 = self.encode(hq)
        embeds = self.text.encode([prompt])
        negative = self.text.negative(1)
        inputs = self.condition_inputs(hq)
        gen = torch.Generator().manual_seed(seed)
        images: Dict[str, List[torch.Tensor]] = {c: [] for c in conditions}
        rmse: Dict[str, List[float]] = {c: [] for c in conditions}
        for t in timesteps:
            if not 0 <= t < len(self.scheduler.alphas_cumprod):
                raise ValueError(f'timestep {t} outside [0, {len(self.scheduler.alphas_cumprod)}).')
            ts = torch.tensor([int(t)], device=self.device)
            eps = torch.randn(z0.shape, generator=gen).to(self.device)
            z_t = add_noise(self.scheduler, z0, eps, ts)
            for cond in conditions:
                feats = None if cond == 'text' else self.conditions[cond].features(inputs[cond])
                eps_hat = self.teacher.teacher_eps(z_t, ts, embeds, negative, feats)
                x0 = x0_from_eps(self.scheduler, z_t, eps_hat, ts)
                rmse[cond].append((x0 - z0).pow(2).mean().sqrt().item())
                images[cond].append(self.decode(x0).cpu())
        return dict(z0=z0, images=images, rmse=rmse, cond_inputs=inputs)


def load_square(path: str, size: int) -> torch.Tensor:
    """Load an image (EXIF-aware), resize its short side to ``size`` and centre-crop a square.

    Args:
        path: Image file.
        size: Output side (rounded down to a multiple of 8).

    Returns:
        ``(1, 3, size, size)`` float in ``[0, 1]``.
    """
    from icmsr.fileio.image_io import load_image_rgb
    x = torch.from_numpy(np.array(load_image_rgb(path))).permute(2, 0, 1)[None].float() / 255
    size = size // 8 * 8
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode='bicubic', align_corners=False, antialias=s < 1).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size]


def _to_pil(img: torch.Tensor, size: int) -> Image.Image:
    """``(1, C, H, W)`` in ``[0, 1]`` -> RGB PIL image of ``size x size``."""
    arr = (img[0].clamp(0, 1) * 255).round().byte()
    if arr.shape[0] == 1:
        arr = arr.expand(3, -1, -1)
    pil = Image.fromarray(arr.permute(1, 2, 0).cpu().numpy())
    return pil if pil.size == (size, size) else pil.resize((size, size), Image.NEAREST)


def make_grid(hq: torch.Tensor, result: Dict[str, Any], timesteps: Sequence[int], title: str,
              cell: int = 192) -> Image.Image:
    """Labelled grid: first column GT / condition inputs, then one column per timestep.

    Args:
        hq: The GT image.
        result: Output of :meth:`DenoisePrior.predict`.
        timesteps: The timesteps (column labels).
        title: Heading text.
        cell: Side of one cell in pixels.

    Returns:
        The grid image.
    """
    conds = list(result['images'])
    pad, head, label_w = 4, 22, 90
    width = label_w + (cell + pad) * (len(timesteps) + 1)
    height = head * 2 + (cell + pad) * len(conds)
    grid = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(grid)
    draw.text((pad, pad), title, fill='black')
    draw.text((label_w, head + 4), 'GT / condition', fill='black')
    for j, t in enumerate(timesteps):
        draw.text((label_w + (cell + pad) * (j + 1), head + 4), f't = {t}', fill='black')
    for i, cond in enumerate(conds):
        y = head * 2 + (cell + pad) * i
        label = 'text-cond.' if cond == 'text' else f'image-cond.\n({cond})'
        draw.text((pad, y + cell // 2 - 10), label, fill='black')
        first = result['cond_inputs'].get(cond)
        if cond == 'text' or first is None:
            first = hq
        elif isinstance(first, list):  # multi: colormap with the edges drawn in white
            first = torch.maximum(first[0], first[1].expand_as(first[0]))
        grid.paste(_to_pil(first.cpu(), cell), (label_w, y))
        for j, img in enumerate(result['images'][cond]):
            x = label_w + (cell + pad) * (j + 1)
            grid.paste(_to_pil(img, cell), (x, y))
            draw.text((x + 3, y + cell - 14), f'rmse {result["rmse"][cond][j]:.3f}', fill='yellow')
    return grid


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description='Teacher one-step denoising: text vs image conditions (Fig. 2)')
    p.add_argument('--config', required=True, help='an ICM-SR training config (teacher, VAE, adapters)')
    p.add_argument('--images', nargs='+', required=True, help='GT image files')
    p.add_argument('--timesteps', nargs='+', type=int, default=[200, 500, 800, 980])
    p.add_argument('--conditions', nargs='+', default=None, choices=CONDITIONS,
                   help='rows (default: every condition the adapters allow)')
    p.add_argument('--prompt', default='', help='text prompt for every image')
    p.add_argument('--size', type=int, default=512, help='square crop side (multiple of 8)')
    p.add_argument('--cell', type=int, default=192, help='cell side in the saved grid')
    p.add_argument('--cfg-scale', type=float, default=None, help='override the teacher guidance scale')
    p.add_argument('--adapter-color', help='colour T2I-Adapter (hub id or folder) if the config has none')
    p.add_argument('--adapter-canny', help='Canny T2I-Adapter (hub id or folder) if the config has none')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='work_dirs/denoise_prior')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build the teacher, run every image, save grids and the RMSE table."""
    args = parse_args(argv)
    from mmengine.config import Config
    from icmsr.utils.setup_env import register_all_modules
    register_all_modules()
    prior = DenoisePrior(Config.fromfile(args.config).model.to_dict(), args.adapter_color,
                         args.adapter_canny, args.device, args.cfg_scale)
    conditions = args.conditions or [c for c in CONDITIONS if c == 'text' or c in prior.conditions]
    os.makedirs(args.out, exist_ok=True)
    table = {}
    for path in args.images:
        hq = load_square(path, args.size)
        result = prior.predict(hq, args.timesteps, args.prompt, args.seed, conditions)
        stem = os.path.splitext(os.path.basename(path))[0]
        make_grid(hq, result, args.timesteps, f'{stem}: teacher one-step x0 from z_t', args.cell).save(
            os.path.join(args.out, f'{stem}.png'))
        table[stem] = result['rmse']
        print(f'{stem}: latent RMSE of x0 to z0')
        print('  ' + f'{"condition":<10}' + ''.join(f'{"t=" + str(t):>9}' for t in args.timesteps))
        for cond, values in result['rmse'].items():
            print('  ' + f'{cond:<10}' + ''.join(f'{v:9.4f}' for v in values))
    with open(os.path.join(args.out, 'denoise_prior.json'), 'w') as f:
        json.dump(dict(timesteps=args.timesteps, rmse=table, prompt=args.prompt, seed=args.seed), f, indent=1)
    print(f'saved grids and denoise_prior.json in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
