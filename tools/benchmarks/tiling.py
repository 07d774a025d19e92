"""Tiled vs whole-image super-resolution: fidelity, memory and throughput.

``python tools/benchmarks/tiling.py [--config C --weights W] [--sections ...]`` prints:

* ``vae``: PSNR / max abs difference (8-bit grey levels) of the VAE encoder and decoder
  run in tiles vs whole, per-tile GroupNorm statistics (``tile``) vs whole-image ones
  (``image``), for tile sizes and overlaps (``--arch sd14``: the SD v1-4 VAE
  architecture with random weights instead of the config's VAE);
* ``unet``: the same for the UNet stage alone (whole-image VAE around it);
* ``full``: ``super_resolve`` tiled vs whole (optionally writing the comparison
  picture, ``--picture``);
* ``memory``: peak RSS over a warm baseline at 1/4/16/64 MP output, each in a fresh
  process, against the output image's own size;
* ``batch``: tiles/s for ``tile_batch`` 1 vs N and whether the outputs are bitwise equal;
* ``auto``: the automatic tile sizes at this machine's default budget and a few fixed ones,
  and the time of ``super_resolve`` with them vs fixed 512 px tiles (use ``--lq-size 256``
  for a 1024 px output).

Times are wall-clock on whatever machine runs it; on a shared CPU they vary with load.
"""
import argparse
import json
import math
import os.path as osp
import resource
import subprocess
import sys
import time
from typing import Any, Callable, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from realsr_data import realsr_root

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def parse_args() -> argparse.Namespace:
    """Parse the command line.

    Returns:
        The parsed arguments.
    """
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--config', default=osp.join(ROOT, 'configs', 'icmsr_tiny_base.py'))
    p.add_argument('--weights', default=osp.join(ROOT, 'work_dirs', 'icmsr_tiny_base',
                                                 'iter_200.pth'))
    p.add_argument('--image', default=osp.join(realsr_root(), 'test_LR', 'Canon_001_LR4.png'),
                   help='LQ photo (its top-left crop is used; default: RealSR Canon_001)')
    p.add_argument('--lq-size', type=int, default=128, help='LQ crop side (output: x scale); smaller photos are enlarged to it')
    p.add_argument('--sections', default='vae,unet,full,batch,memory')
    p.add_argument('--arch', default='config', choices=('config', 'sd14'),
                   help='VAE of the vae section: the config\'s or SD v1-4 with random weights')
    p.add_argument('--tiles', default='256,384', help='tile sizes (output px)')
    p.add_argument('--overlaps', default='32,64', help='overlaps (output px)')
    p.add_argument('--megapixels', default='1,4,16,64', help='memory section output sizes')
    p.add_argument('--memory-model', default='standin', choices=('standin', 'model'),
                   help='memory section: pooling/upsampling stand-ins for the three networks '
                        '(the tiling machinery alone; fast) or the config\'s model')
    p.add_argument('--memory-tile', default='512', help='memory section tile size (or auto: '
                   'also prints the estimate of icmsr.utils.tile_memory for the whole image)')
    p.add_argument('--tile-batch', type=int, default=4)
    p.add_argument('--contexts', default='tile,norms,image',
                   help='compared tile contexts: tile (per-tile norms and attention), norms '
                        '(whole-image GroupNorm, attention within tiles), image (both whole-image)')
    p.add_argument('--attention-memory', type=float, default=0.25,
                   help='GiB of whole-image attention keys and values per network')
    p.add_argument('--picture', default=None, help='write whole | per-tile | image-stats crops')
    p.add_argument('--memory-child', default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def psnr_max(a: torch.Tensor, b: torch.Tensor) -> Tuple[float, float]:
    """PSNR (dB) and max abs difference in 8-bit levels of two ``[-1, 1]`` images."""
    a, b = a.clamp(-1, 1), b.clamp(-1, 1)
    mse = F.mse_loss(a, b).item() / 4
    return (10 * math.log10(1 / mse) if mse > 0 else float('inf'),
            (a - b).abs().max().item() * 127.5)


def load_model(args: argparse.Namespace) -> Any:
    """The config's model with the weights (untrained LoRA when the file is missing)."""
    from icmsr.apis import init_model
    weights = args.weights if osp.isfile(args.weights) else None
    if weights is None:
        print(f'[tiling] {args.weights} not found: untrained LoRA (the base alone)')
    return init_model(args.config, weights, device='cpu', allow_untrained=weights is None)


def load_lq(args: argparse.Namespace) -> torch.Tensor:
    """The LQ crop ``(1, 3, s, s)`` in ``[0, 1]``."""
    from icmsr.fileio.image_io import load_image_rgb
    import cv2
    img = np.array(load_image_rgb(args.image))
    if min(img.shape[:2]) < args.lq_size:  # a small LQ is enlarged (bicubic) to the crop size
        side = min(img.shape[:2])
        img = cv2.resize(img[:side, :side], (args.lq_size, args.lq_size),
                         interpolation=cv2.INTER_CUBIC)
    img = img[:args.lq_size, :args.lq_size]
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def contexts(args: argparse.Namespace) -> List[Tuple[str, str, float]]:
    """(label, norm_stats, attention_memory) of the compared tile contexts."""
    every = {'tile': ('tile', 'tile', 0),
             'norms': ('image norms, tile attention', 'image', 0),
             'image': ('image', 'image', args.attention_memory)}
    return [every[name] for name in args.contexts.split(',')]


def timed(fn: Callable[[], Any]) -> Tuple[Any, float]:
    """``fn()`` and its wall time in seconds."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _row(*cells: Any) -> str:
    return '| ' + ' | '.join(str(c) for c in cells) + ' |'


def section_vae(args: argparse.Namespace, model: Any, x: torch.Tensor) -> None:
    """VAE encoder and decoder, tiled vs whole."""
    from icmsr.utils.tile_context import WholeImageContext
    from icmsr.utils.tiling import TileSettings, tiled_apply
    if args.arch == 'sd14':
        from diffusers import AutoencoderKL
        from mmengine.config import Config
        cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'models', 'sd14_arch.py'))
        torch.manual_seed(0)
        vae = AutoencoderKL(**cfg.sd14_vae.to_dict()).eval()
        name = 'SD v1-4 VAE architecture, random weights (seed 0)'
    else:
        vae, name = model.generator.vae, f'VAE of {osp.basename(args.config)}'

    def encode(t: torch.Tensor) -> torch.Tensor:
        return vae.encode(t).latent_dist.mode()

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z).sample
    with torch.no_grad():
        z, t_enc = timed(lambda: encode(x))
        whole, t_dec = timed(lambda: decode(z))
    print(f'\n## VAE only: {name}, image {x.shape[-1]}x{x.shape[-2]} '
          f'(whole: encode {t_enc:.1f} s, decode {t_dec:.1f} s)')
    print('encode: tiled latents decoded whole; decode: whole latents decoded in tiles')
    print(_row('tile', 'overlap', 'context', 'encode PSNR / max', 'encode s',
               'decode PSNR / max', 'decode s'))
    print(_row(*['---'] * 7))
    for tile in map(int, args.tiles.split(',')):
        for overlap in map(int, args.overlaps.split(',')):
            for stats, norm_stats, share in contexts(args):
                enc, dec = ((WholeImageContext([m], share * 2 ** 30)
                             for m in (vae.encoder, vae.decoder))
                            if norm_stats == 'image' else (None, None))
                mode = TileSettings(norm_stats=norm_stats).blend_mode
                with torch.no_grad():
                    z_t, te = timed(lambda: tiled_apply(x, encode, tile, overlap, scale=1 / 8,
                                                        norms=enc, mode=mode))
                    e = psnr_max(decode(z_t), whole)
                    d_t, td = timed(lambda: tiled_apply(z, decode, tile // 8, overlap // 8,
                                                        scale=8, norms=dec, mode=mode))
                    d = psnr_max(d_t, whole)
                print(_row(tile, overlap, stats, f'{e[0]:.1f} dB / {e[1]:.0f}', f'{te:.1f}',
                           f'{d[0]:.1f} dB / {d[1]:.0f}', f'{td:.1f}'), flush=True)


def _sr(model: Any, lq: torch.Tensor, **tiles: Any) -> torch.Tensor:
    from icmsr.utils.tiling import TileSettings
    return model.super_resolve(lq, [''], tiles=TileSettings(**tiles)) * 2 - 1


def section_unet_full(args: argparse.Namespace, model: Any, lq: torch.Tensor,
                      unet_only: bool) -> None:
    """The UNet stage alone (VAE whole) or the whole path, tiled vs whole."""
    side = lq.shape[-1] * model.scale
    big = 2 * side  # a VAE tile that holds the whole image
    whole, t_whole = timed(lambda: _sr(model, lq, tile_size=big, vae_tile_size=big))
    title = 'UNet only (VAE whole)' if unet_only else 'Full path (VAE + UNet tiles)'
    print(f'\n## {title}: {osp.basename(args.config)}, output {side}x{side} '
          f'(whole {t_whole:.1f} s)')
    print(_row('tile', 'overlap', 'context', 'PSNR', 'max diff', 's', 'x whole time'))
    print(_row(*['---'] * 7))
    results = {}
    compared = contexts(args)
    for tile in map(int, args.tiles.split(',')):
        for overlap in map(int, args.overlaps.split(',')):
            for stats, norm_stats, share in compared:
                keys = dict(tile_size=tile, tile_overlap=overlap, norm_stats=norm_stats,
                            attention_memory=share,
                            vae_tile_size=big if unet_only else tile,
                            vae_overlap=64 if unet_only else overlap)
                out, sec = timed(lambda: _sr(model, lq, **keys))
                p, m = psnr_max(out, whole)
                results[(tile, overlap, stats)] = out
                print(_row(tile, overlap, stats, f'{p:.1f} dB', f'{m:.0f}', f'{sec:.1f}',
                           f'{sec / t_whole:.1f}'), flush=True)
    if args.picture and not unet_only:
        key = (int(args.tiles.split(',')[0]), int(args.overlaps.split(',')[-1]))
        titles = {'tile': 'per-tile context (before)', 'image norms, tile attention':
                  'whole-image norms,\nattention within tiles', 'image': 'whole-image context'}
        write_picture(args.picture, whole, [(titles[c[0]], results[key + (c[0], )])
                                            for c in compared], key)


def write_picture(path: str, whole: torch.Tensor, tiled: List[Tuple[str, torch.Tensor]],
                  key: Tuple[int, int]) -> None:
    """whole | each tiled result, same crop, with its PSNR and max difference underneath."""
    import cv2

    from icmsr.utils.atomic_io import atomic_save_image
    side = whole.shape[-1]
    crop = slice(side // 2 - 128, side // 2 + 128)  # the centre, where the tile seams meet

    def panel(img: torch.Tensor, label: str) -> np.ndarray:
        arr = ((img[0, :, crop, crop].clamp(-1, 1) + 1) * 127.5).round().byte()
        arr = np.ascontiguousarray(arr.permute(1, 2, 0).numpy())
        arr = cv2.resize(arr, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        bar = np.full((64, arr.shape[1], 3), 255, np.uint8)
        for i, line in enumerate(label.split('\n')):
            cv2.putText(bar, line, (6, 17 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                        cv2.LINE_AA)
        return np.concatenate([arr, bar], 0)
    panels = [panel(whole, 'whole image (reference)\none tile')]
    for title, img in tiled:
        p, m = psnr_max(img, whole)
        panels.append(panel(img, f'{title}\n{p:.1f} dB, max diff {m:.0f}'))
    atomic_save_image(path, np.concatenate(panels, 1), optimize=True)
    print(f'[tiling] picture: {path} ({key[0]} px tiles, {key[1]} px overlap; '
          'centre 256x256 crop shown at 2x)')


def section_batch(args: argparse.Namespace, model: Any, lq: torch.Tensor) -> None:
    """tiles/s of tile_batch 1 vs N, and bitwise equality."""
    print(f'\n## Batched tiles: full path, 128 px tiles, output {lq.shape[-1] * model.scale} px')
    print(_row('tile_batch', 'norm stats', 'tiles/s', 'bitwise equal to 1', 'max abs diff'))
    print(_row(*['---'] * 5))
    for stats in ('tile', 'image'):
        ref = None
        for batch in (1, args.tile_batch):
            counted = []

            def progress(stage: str, done: int, total: int) -> None:
                counted.append(stage)
            from icmsr.utils.tiling import TileSettings
            tiles = TileSettings(128, 32, 128, 32, tile_batch=batch, norm_stats=stats)
            out, sec = timed(lambda: model.super_resolve(lq, [''], tiles=tiles,
                                                         progress=progress))
            ref = out if ref is None else ref
            print(_row(batch, stats, f'{len(counted) / sec:.1f}', bool(torch.equal(out, ref)),
                       f'{(out - ref).abs().max().item():.2e}'), flush=True)


def section_auto(args: argparse.Namespace, model: Any, lq: torch.Tensor) -> None:
    """Automatic tile sizes (default budget and fixed ones) and their time vs 512 px tiles."""
    from icmsr.utils.tile_memory import default_budget, largest_tile
    side = lq.shape[-1] * model.scale
    auto, t_auto = timed(lambda: _sr(model, lq, tile_size='auto', vae_tile_size='auto'))
    vae, unet = next(iter(model.tile_costs.values()))  # measured by the call above
    print(f'\n### Automatic tiles, {side} px output (first call measures the probe tiles)\n')
    print(_row('budget', 'VAE tile', 'UNet tile', 'VAE estimate at that tile',
               'UNet estimate at that tile'))
    print(_row(*['---'] * 5))
    for label, budget in [('default', default_budget(torch.device('cpu')))] + [
            (f'{g} GiB', g * 2 ** 30) for g in (4, 1, 0.25)]:
        tv, tu = (largest_tile(c, side, side, 64, budget) for c in (vae, unet))
        est = [f'{c(min(t, side) ** 2) / 2 ** 30:.2f} GiB' for c, t in ((vae, tv), (unet, tu))]
        print(_row(f'{label} ({budget / 2 ** 30:.1f} GiB)' if label == 'default' else label,
                   tv, tu, *est))
    fixed, t_fixed = timed(lambda: _sr(model, lq, tile_size=512, vae_tile_size=512))
    print(f'\nauto (default budget): {t_auto:.1f} s; fixed 512 px tiles: {t_fixed:.1f} s '
          f'({t_fixed / t_auto:.1f}x the auto time); PSNR fixed vs auto '
          f'{psnr_max(fixed, auto)[0]:.1f} dB', flush=True)


def _standin(model: Any) -> None:
    # Cheap stand-ins with the stages' shapes: the memory of the tiling machinery itself.
    gen = model.generator
    gen.encode = lambda x: F.avg_pool2d(x, 8)[:, :1].repeat(1, 4, 1, 1)
    gen.denoise = lambda z, e: z * 0.5
    gen.decode = lambda z: F.interpolate(z[:, :3], scale_factor=8, mode='nearest')


def memory_child(args: argparse.Namespace) -> None:
    """Run one output size in this process and print peak RSS figures as JSON."""
    from icmsr.utils.tiling import TileSettings
    model = load_model(args)
    if args.memory_model == 'standin':
        _standin(model)
    mp = float(args.memory_child)
    side = int(round(math.sqrt(mp * 1e6) / 64)) * 64
    stats = 'tile' if args.memory_model == 'standin' else 'image'
    size = args.memory_tile if args.memory_tile == 'auto' else int(args.memory_tile)
    tiles = TileSettings(size, 64, size, 64, norm_stats=stats)
    model.super_resolve(torch.rand(1, 3, 32, 32), [''], tiles=tiles)  # warm-up (and probe)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lq = torch.rand(1, 3, side // model.scale, side // model.scale)
    _, sec = timed(lambda: model.super_resolve(lq, [''], tiles=tiles))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    costs = [c(side * side) for c in next(iter(model.tile_costs.values()), ())]
    print(json.dumps(dict(side=side, base=base, peak=peak, lq=lq.numel() * 4, s=sec, est=costs)))


def section_memory(args: argparse.Namespace) -> None:
    """Peak RSS vs output size, one fresh process per size."""
    what = ('pooling/upsampling stand-ins for the networks (tiling machinery only)'
            if args.memory_model == 'standin' else osp.basename(args.config))
    print(f'\n## Peak memory vs output size ({what}; {args.memory_tile} px tiles, 64 px overlap)')
    print('output image = 3 x H x W float32 (what super_resolve returns); '
          'extra = peak RSS - RSS after a warm-up run')
    print(_row('output', 'MP', 'output image MiB', 'extra MiB', 'extra / output image', 's'))
    print(_row(*['---'] * 6))
    for mp in args.megapixels.split(','):
        cmd = [sys.executable, __file__, '--config', args.config, '--weights', args.weights,
               '--memory-model', args.memory_model, '--memory-tile', args.memory_tile,
               '--memory-child', mp]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith('{')]
        if res.returncode or not lines:
            print(f'[tiling] {mp} MP failed: {res.stderr.strip().splitlines()[-1:]}')
            continue
        r = json.loads(lines[-1])
        image = 3 * r['side'] ** 2 * 4
        extra = r['peak'] - r['base']
        print(_row(f"{r['side']}x{r['side']}", f"{r['side'] ** 2 / 1e6:.1f}",
                   f'{image / 2 ** 20:.0f}', f'{extra / 2 ** 20:.0f}',
                   f'{extra / image:.2f}', f"{r['s']:.1f}"), flush=True)
        if r['est']:  # auto: the whole-image estimates of the VAE and UNet working sets
            print(f"  estimate (VAE, UNet): {', '.join(f'{e / 2 ** 20:.0f} MiB' for e in r['est'])}")


def main() -> None:
    """Run the chosen sections."""
    args = parse_args()
    torch.set_grad_enabled(False)
    if args.memory_child:
        memory_child(args)
        return
    sections = args.sections.split(',')
    model = load_model(args) if set(sections) - {'memory'} else None
    lq = load_lq(args) if model is not None else None
    if 'vae' in sections:
        x = F.interpolate(lq, scale_factor=model.scale, mode='bicubic',
                          align_corners=False).clamp(0, 1) * 2 - 1
        section_vae(args, model, x)
    if 'unet' in sections:
        section_unet_full(args, model, lq, unet_only=True)
    if 'full' in sections:
        section_unet_full(args, model, lq, unet_only=False)
    if 'batch' in sections:
        section_batch(args, model, lq[..., :64, :64])
    if 'auto' in sections:
        section_auto(args, model, lq)
    if 'memory' in sections:
        section_memory(args)
    print(f'\n[tiling] torch {torch.__version__}, {torch.get_num_threads()} threads; '
          'timings on a shared machine vary with its load')


if __name__ == '__main__':
    main()
