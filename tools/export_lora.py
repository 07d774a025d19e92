"""Export a trained generator as LoRA safetensors + JSON.

Usage: ``python tools/export_lora.py CKPT --config CFG --out DIR``.

The folder can be given to ``tools/infer.py --weights DIR`` (no config needed) and to
``icmsr.apis.init_model``; ``--merged`` also writes full UNet/VAE folders with the LoRA folded in.
"""
import argparse
import json
import os
import pickle
import sys
import tempfile

from icmsr.utils.network import go_offline_if_unreachable

# Before the hub libraries read HF_HUB_OFFLINE: offline, fail at once instead of retrying.
go_offline_if_unreachable()

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import icmsr  # noqa: E402,F401  (applies the checkpoint-loading shims)
from icmsr.apis import export_model, init_model  # noqa: E402
from icmsr.apis.model_loading import model_config  # noqa: E402
from icmsr.compat import checkpoint_refusal_message, trusted_checkpoint_loading  # noqa: E402
from icmsr.engine.runner_utils import load_config  # noqa: E402
from icmsr.models import OneStepSR  # noqa: E402
from icmsr.registry import register_all_modules  # noqa: E402


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
    return p.parse_args(argv)


def _refused_unpickling(err: BaseException):
    """The ``UnpicklingError`` behind ``err`` (a loader may wrap it), or None."""
    while err is not None:
        if isinstance(err, pickle.UnpicklingError):
            return err
        err = err.__cause__
    return None


def _tensors_only_copy(checkpoint: str, folder: str) -> str:
    """Unpickle a trusted checkpoint fully and keep its state dict in a weights-only file."""
    with trusted_checkpoint_loading():
        ckpt = torch.load(checkpoint, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    path = os.path.join(folder, 'state_dict.pth')
    torch.save({'state_dict': state}, path)
    return path


def main(argv=None) -> int:
    """Export and print the written files.

    Args:
        argv: Command-line arguments.

    Returns:
        Exit code.
    """
    args = parse_args(argv)
    register_all_modules()
    config = load_config(args.config, args.cfg_options)
    model_cfg = OneStepSR.inference_config(model_config(config))
    with tempfile.TemporaryDirectory(prefix='icmsr_export_') as tmp:
        checkpoint = _tensors_only_copy(args.checkpoint, tmp) if args.trust_checkpoint \
            else args.checkpoint
        try:
            model = init_model(config, checkpoint, device='cpu', dtype='float32', fuse=False)
        except Exception as err:  # the loader wraps torch's refusal
            refused = _refused_unpickling(err)
            if refused is None:
                raise
            print(f'error: {checkpoint_refusal_message(args.checkpoint, refused)}', file=sys.stderr)
            return 2
    files = export_model(model, args.out, model_cfg, merged=args.merged,
                         extra=dict(source_checkpoint=args.checkpoint, config=args.config,
                                    icmsr_version=icmsr.__version__))
    print(json.dumps(files, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
