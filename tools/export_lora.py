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
from icmsr.apis import export_model, init_model
from icmsr.apis.model_loading import model_config
from icmsr.models import OneStepSR
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
    model_cfg = OneStepSR.inference_config(model_config(config))
    model = init_model(config, args.checkpoint, device='cpu', dtype='float32', fuse=False)
    files = export_model(model, args.out, model_cfg, merged=args.merged,
                         extra=dict(source_checkpoint=args.checkpoint, config=args.config,
                                    icmsr_version=icmsr.__version__))
    print(json.dumps(files, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
