"""Export a trained generator as LoRA safetensors + JSON.

Usage: ``python tools/export_lora.py CKPT --config CFG --out DIR``.

The folder can be given to ``tools/infer.py --weights DIR`` (no config needed) and to
``icmsr.apis.init_model``; ``--merged`` also writes full UNet/VAE folders with the LoRA folded in.
"""
import argparse
import json
import sys

from icmsr.utils.network import go_offline_if_unreachable

# Before the hub libraries read HF_HUB_OFFLINE: offline, fail at once instead of retrying.
go_offline_if_unreachable()

from mmengine.config import DictAction  # noqa: E402

import icmsr  # noqa: E402,F401  (applies the checkpoint-loading shims)
from icmsr.apis import export_model, init_model  # noqa: E402
from icmsr.apis.model_loading import model_config  # noqa: E402
from icmsr.engine.config_checks import check_pretrained_folders  # noqa: E402
from icmsr.engine.runner_utils import load_config  # noqa: E402
from icmsr.models import OneStepSR  # noqa: E402
from icmsr.user_errors import (add_debug_flag, check_input_exists,  # noqa: E402
                               check_output_folder, run_tool)
from icmsr.utils.setup_env import register_all_modules  # noqa: E402


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
    p.add_argument('--trust-checkpoint', action='store_true',
                   help='allow full unpickling of the checkpoint '
                   '(only for files you trust: unpickling can run code)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    add_debug_flag(p)
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
    if '://' not in args.checkpoint:
        check_input_exists(args.checkpoint, 'checkpoint')
    check_output_folder(args.out, '--out')
    config = load_config(args.config, args.cfg_options)
    check_pretrained_folders(config)
    model_cfg = OneStepSR.inference_config(model_config(config))
    try:
        model = init_model(config, args.checkpoint, device='cpu', dtype='float32', fuse=False,
                           trust_checkpoint=args.trust_checkpoint)
    except RuntimeError as err:  # unreadable, or refused unpickling (named with our flag)
        print(f'error: {err}', file=sys.stderr)
        return 2
    files = export_model(model, args.out, model_cfg, merged=args.merged,
                         extra=dict(source_checkpoint=args.checkpoint, config=args.config,
                                    icmsr_version=icmsr.__version__))
    print(json.dumps(files, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
