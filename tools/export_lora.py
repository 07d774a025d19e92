"""Export a trained generator as LoRA safetensors + JSON.

Usage: ``python tools/export_lora.py CKPT --config CFG --out DIR``.

The folder can be given to ``tools/infer.py --weights DIR`` (no config needed) and to
``icmsr.apis.init_model``; ``--merged`` also writes full UNet/VAE folders with the LoRA folded in.
"""
import argparse
import json
import sys

from mmengine.config import Config, DictAction

import icmsr  # noqa: F401  (applies the checkpoint-loading shims)
from icmsr.apis import describe_generator, export_generator, init_model
from icmsr.apis.model_loading import generator_and_text_cfgs, model_scale
from icmsr.registry import register_all_modules


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The parsed arguments.
    """
    p = argparse.ArgumentParser(description='Export ICM-SR generator LoRA (diffusers/peft layout)')
    p.add_argument('checkpoint', help='checkpoint .pth written by tools/train.py')
    p.add_argument('--config', required=True, help='the config the checkpoint was trained with')
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--merged', action='store_true', help='also write merged/unet and merged/vae')
    p.add_argument('--base-model', help='record this base model id/folder instead of the config\'s')
    p.add_argument('--allow-random-base', action='store_true',
                   help='export even if the config builds UNet/VAE with random weights (tests, demos)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Export and print the written files.

    Args:
        argv: Command-line arguments.

    Returns:
        Exit code.
    """
    args = parse_args(argv)
    register_all_modules()
    config = Config.fromfile(args.config)
    if args.cfg_options:
        config.merge_from_dict(args.cfg_options)
    model_cfg = config.model.to_dict()
    cfgs = generator_and_text_cfgs(model_cfg)
    description = describe_generator(cfgs['generator'], cfgs['text'], model_scale(model_cfg), args.base_model,
                                     extra=dict(source_checkpoint=args.checkpoint, config=args.config,
                                                icmsr_version=icmsr.__version__))
    if description['random_base_components'] and not args.allow_random_base:
        print(f'error: the config builds {description["random_base_components"]} with random weights '
              '(from_config); the LoRA could not be applied to anything reproducible. Use a config with '
              'from_pretrained weights, or pass --allow-random-base for a demo export.', file=sys.stderr)
        return 2
    model = init_model(config, args.checkpoint, device='cpu', dtype='float32', fuse=False)
    files = export_generator(model.generator, args.out, description, merged=args.merged)
    print(json.dumps(files, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
