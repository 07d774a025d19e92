"""Super-resolve images: ``python tools/infer.py --config CFG --weights CKPT --input PATH --output DIR``.

``--input`` is a file, a folder or a quoted glob (``'photos/*.jpg'``). Outputs keep the
input names. Images of any size are processed in overlapping tiles; see docs/inference.md.
"""
import argparse
import sys
import time

from icmsr.utils.network import go_offline_if_unreachable

# Before the hub libraries read HF_HUB_OFFLINE: offline, fail at once instead of retrying.
go_offline_if_unreachable()

from mmengine.config import DictAction  # noqa: E402

import icmsr  # noqa: E402,F401  (applies the checkpoint-loading shims)
from icmsr.apis import SRInferencer, UntrainedModelError, collect_inputs  # noqa: E402
from icmsr.engine.config_checks import check_pretrained_folders  # noqa: E402
from icmsr.engine.runner_utils import load_config  # noqa: E402
from icmsr.models.base_fingerprint import BaseMismatchError  # noqa: E402
from icmsr.user_errors import (add_debug_flag, check_input_exists,  # noqa: E402
                               check_output_folder, run_tool)
from icmsr.utils.setup_env import register_all_modules  # noqa: E402
from icmsr.utils.color_correction import COLOR_FIX_MODES  # noqa: E402
from icmsr.utils.tiling import BLEND_MODES  # noqa: E402


def tile_arg(value: str):
    """A tile size on the command line: an integer or ``auto``."""
    return value if value == 'auto' else int(value)


def tile_overrides(args: argparse.Namespace, config) -> dict:
    """The tiling keys the command line sets, with automatic sizes where nothing fixes them.

    Args:
        args: Parsed arguments.
        config: The loaded config, or None (an export folder brings its own settings).

    Returns:
        ``TileSettings`` fields overriding the model's ``test_cfg``.
    """
    tiles = {k: getattr(args, k) for k in ('tile_size', 'tile_overlap', 'vae_tile_size', 'vae_overlap',
                                           'blend', 'tile_batch', 'norm_stats',
                                           'attention_memory', 'max_memory')
             if getattr(args, k) is not None}
    # The user's own photos: sizes neither given here nor set by the config fit the memory;
    # a budget asks for that whatever the config (or an export's settings) sets.
    config_tiles = (config.model.get('test_cfg') or {}) if config is not None else None
    for key in ('tile_size', 'vae_tile_size'):
        if args.max_memory is not None or (config_tiles is not None and key not in config_tiles):
            tiles.setdefault(key, 'auto')
    return tiles


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The parsed arguments.
    """
    p = argparse.ArgumentParser(description='ICM-SR inference on files, folders or globs')
    p.add_argument('--config', help='training config (optional when --weights is an export folder)')
    p.add_argument('--weights', help='checkpoint .pth from tools/train.py, or a LoRA export folder '
                   'from tools/export_lora.py')
    p.add_argument('--allow-untrained', action='store_true',
                   help='run without --weights (untrained LoRA: smoke tests only)')
    p.add_argument('--allow-base-mismatch', action='store_true',
                   help='load weights trained on another frozen base (a deliberate transfer)')
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='allow full unpickling of the checkpoint '
                   '(only for files you trust: unpickling can run code)')
    p.add_argument('--input', required=True, help='image file, folder, or quoted glob pattern')
    p.add_argument('--output', required=True, help='output folder (same file names as the inputs)')
    p.add_argument('--device', default=None, help='cuda, cuda:1, cpu (default: cuda if available)')
    p.add_argument('--dtype', default='float32',
                   choices=['float32', 'float16', 'bfloat16', 'fp32', 'fp16', 'bf16'])
    p.add_argument('--no-fuse', action='store_true', help='keep the LoRA branches separate (slower)')
    p.add_argument('--scale', type=int, default=None, help='override the model\'s upscaling factor')
    p.add_argument('--base-model', help='SD folder/hub id overriding an export\'s base model')
    p.add_argument('--prompt', default='', help='fixed prompt for every image (default: empty)')
    p.add_argument('--captions',
                   help='per-image captions: folder of <stem>.txt, JSON, or name<TAB>caption file')
    p.add_argument('--color-fix', default=None, choices=COLOR_FIX_MODES,
                   help='colour correction of the output toward the input (default: the config\'s '
                   'model.test_cfg.color_fix)')
    p.add_argument('--tile-size', type=tile_arg, help='UNet tile in output pixels, multiple of 8, '
                   'or auto: the largest that fits --max-memory (default: the config\'s '
                   'model.test_cfg.tile_size or an export\'s setting if there is one and no --max-memory '
                   'is given, else auto)')
    p.add_argument('--tile-overlap', type=int, help='UNet tile overlap in output pixels (default 64)')
    p.add_argument('--vae-tile-size', type=tile_arg,
                   help='VAE encoder/decoder tile in output pixels, or auto (default: as --tile-size)')
    p.add_argument('--max-memory', type=float, help='GiB a tile may use when tile sizes are auto '
                   '(default: 80%% of free GPU memory, 50%% of available RAM on CPU)')
    p.add_argument('--vae-overlap', type=int, help='VAE tile overlap in output pixels (default 64)')
    p.add_argument('--blend', choices=BLEND_MODES, help='tile blending window (default: core with '
                   '--norm-stats image, gaussian with --norm-stats tile)')
    p.add_argument('--tile-batch', type=int, help='tiles per network call (default 1)')
    p.add_argument('--norm-stats', choices=('image', 'tile'), help='what tiles see: the whole '
                   'image\'s GroupNorm statistics and attention keys/values (default; tiles do '
                   'not show) or only themselves (faster)')
    p.add_argument('--attention-memory', type=float, help='GiB of whole-image attention keys and '
                   'values per network with --norm-stats image (default 0.25; 0: attention '
                   'within tiles)')
    p.add_argument('--seed', type=int, default=0, help='seed set before every image')
    # No limit by default: these are the user's own files and tiles bound the memory; the
    # limit is for shared servers (the web app) and for catching a mistaken huge input.
    p.add_argument('--max-pixels', type=int, default=None,
                   help='refuse inputs with more than this many pixels (h*w; default: no limit)')
    p.add_argument('--ext', help='output extension (png, jpg, ...); default: keep the input\'s')
    p.add_argument('--recursive', action='store_true', help='descend into sub-folders')
    p.add_argument('--skip-existing', action='store_true', help='do not redo outputs that exist')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run inference and print the summary.

    Args:
        argv: Command-line arguments.

    Returns:
        Exit code: 0 when every file was processed, 1 when some failed.
    """
    args = parse_args(argv)
    register_all_modules()
    config = load_config(args.config, args.cfg_options) if args.config else None
    if args.weights is None and not args.allow_untrained:
        print('error: --weights is required (a checkpoint or an export folder); pass '
              '--allow-untrained to run the untrained LoRA on purpose.', file=sys.stderr)
        return 2
    # The user's paths before the model is built: a mistake there costs seconds, not minutes.
    if args.weights is not None and '://' not in args.weights:
        check_input_exists(args.weights, '--weights')
    if config is not None and args.base_model is None:
        check_pretrained_folders(config)
    collect_inputs(args.input, args.recursive)
    check_output_folder(args.output, '--output')
    start = time.perf_counter()
    print('building the model ...', flush=True)
    tiles = tile_overrides(args, config)
    try:
        inferencer = SRInferencer(
            config, args.weights, tiles=tiles, color_fix=args.color_fix, prompt=args.prompt,
            captions=args.captions, seed=args.seed, max_pixels=args.max_pixels,
            device=args.device, dtype=args.dtype, fuse=not args.no_fuse, base_model=args.base_model,
            scale=args.scale, allow_untrained=args.allow_untrained, trust_checkpoint=args.trust_checkpoint,
            base_check='warn' if args.allow_base_mismatch else 'error')
    except (BaseMismatchError, UntrainedModelError, RuntimeError, OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'model ready in {time.perf_counter() - start:.1f} s', flush=True)
    summary = inferencer(args.input, args.output, ext=args.ext, recursive=args.recursive,
                         skip_existing=args.skip_existing, progress=not args.no_progress)
    print(summary.format())
    return 1 if summary.failed else 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
