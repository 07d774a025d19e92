"""Convert OSEDiff's released checkpoint (``osediff.pkl``) into this toolkit's export format.

Usage::

    python tools/convert_osediff.py osediff.pkl --out exports/osediff_sd21 \
        [--config configs/osediff_sd21.py] [--cfg-options ...]

OSEDiff saves a plain dict (``torch.save``) of its trainable tensors after adding
peft LoRA adapters to the diffusers UNet and VAE:

* ``rank_unet``, ``unet_lora_encoder_modules`` / ``unet_lora_decoder_modules`` /
  ``unet_lora_others_modules`` - the rank and the full module names of its three UNet
  adapters ``default_encoder`` (down blocks), ``default_decoder`` (up blocks) and
  ``default_others`` (the rest, ``conv_in`` included);
* ``state_dict_unet`` - peft's tensors ``<module>.lora_A.<adapter>.weight`` /
  ``lora_B`` and the trained ``conv_in`` (``conv_in.base_layer.weight``/``bias``, since
  ``conv_in`` carries a LoRA too);
* ``rank_vae``, ``vae_lora_encoder_modules``, ``state_dict_vae`` - the VAE-encoder adapter
  ``default_encoder``.

Every adapter uses peft's default ``lora_alpha=8``. The conversion copies each LoRA
pair into the generator the config builds (it checks that both name the same layers),
folds ``conv_in``'s LoRA into the trained ``conv_in`` weights, and writes an export
folder (``tools/infer.py --weights DIR``, ``ICMSRPipeline.from_export(DIR)``) plus a
checkpoint ``DIR/osediff_sd21.pth`` for ``tools/test.py``.
"""
import argparse
import json
import os.path as osp
import re
import sys
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import icmsr  # noqa: E402,F401  (checkpoint-loading shims)
from icmsr.apis import export_model  # noqa: E402
from icmsr.utils.atomic_io import atomic_torch_save  # noqa: E402
from icmsr.apis.model_loading import model_config  # noqa: E402
from icmsr.models import OneStepSR  # noqa: E402
from icmsr.models.lora import LoRABranch, module_name  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'osediff_sd21.py')
CHECKPOINT_NAME = 'osediff_sd21.pth'
#: peft's default ``lora_alpha``, which OSEDiff's LoraConfigs leave unchanged.
OSEDIFF_LORA_ALPHA = 8
UNET_ADAPTERS = {'unet_lora_encoder_modules': 'default_encoder',
                 'unet_lora_decoder_modules': 'default_decoder',
                 'unet_lora_others_modules': 'default_others'}
VAE_ADAPTERS = {'vae_lora_encoder_modules': 'default_encoder'}
REQUIRED_KEYS = ('rank_unet', 'state_dict_unet', 'rank_vae', 'state_dict_vae',
                 *UNET_ADAPTERS, *VAE_ADAPTERS)
_LORA_KEY = re.compile(r'^(?P<module>.+)\.lora_(?P<part>[AB])\.(?P<adapter>[^.]+)\.weight$')


class OSEDiffCheckpointError(ValueError):
    """The file is not an OSEDiff checkpoint this converter understands."""


def read_osediff_checkpoint(path: str) -> Dict[str, Any]:
    """Load ``osediff.pkl`` (tensors, ints and name lists only: ``weights_only=True``).

    Args:
        path: the checkpoint.

    Returns:
        Its dict.

    Raises:
        OSEDiffCheckpointError: a missing key, named.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'OSEDiff checkpoint {path!r} does not exist (download osediff.pkl '
                                'from the OSEDiff repository, preset/models/).')
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, Mapping) or k not in ckpt]
    if missing:
        raise OSEDiffCheckpointError(f'{path}: not an OSEDiff checkpoint, keys {missing} are missing '
                                     f'(expected {list(REQUIRED_KEYS)}).')
    return dict(ckpt)


def _lora_pairs(state: Mapping[str, torch.Tensor], adapters: Mapping[str, str], ckpt: Mapping[str, Any],
                where: str) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (lora_A, lora_B)}`` of the listed adapters; every listed module must have both."""
    owner = {}
    for list_key, adapter in adapters.items():
        for name in ckpt[list_key]:
            owner[name] = adapter
    pairs: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        match = _LORA_KEY.match(key)
        if match is None:
            continue
        if owner.get(match['module']) != match['adapter']:
            raise OSEDiffCheckpointError(f'{where}: {key} belongs to no listed adapter module.')
        pairs.setdefault(match['module'], {})[match['part']] = tensor
    incomplete = sorted(set(owner) - {m for m, p in pairs.items() if len(p) == 2})
    if incomplete:
        raise OSEDiffCheckpointError(f'{where}: no lora_A/lora_B tensors for {len(incomplete)} listed '
                                     f'modules, e.g. {incomplete[:3]}.')
    return {m: (p['A'], p['B']) for m, p in pairs.items()}


def _copy_pairs(branches: torch.nn.ModuleDict, pairs: Dict[str, Tuple[torch.Tensor, torch.Tensor]],
                rank: int, where: str) -> None:
    """Copy OSEDiff's pairs into our branches; both must name the same layers with the same scale."""
    ours = {module_name(k): b for k, b in branches.items()}
    only_ckpt, only_cfg = sorted(set(pairs) - set(ours)), sorted(set(ours) - set(pairs))
    if only_ckpt or only_cfg:
        raise OSEDiffCheckpointError(
            f'{where}: the config builds LoRA on other layers than the checkpoint has: '
            f'{len(only_ckpt)} only in the checkpoint (e.g. {only_ckpt[:3]}), {len(only_cfg)} only '
            f'in the config (e.g. {only_cfg[:3]}). Is the config on the same base model?')
    for name, (lora_a, lora_b) in pairs.items():
        branch = ours[name]
        if abs(branch.scale - OSEDIFF_LORA_ALPHA / rank) > 1e-9:
            raise OSEDiffCheckpointError(f'{where}: LoRA scale {branch.scale} of the config differs from '
                                         f"OSEDiff's {OSEDIFF_LORA_ALPHA}/{rank}: set generator.lora_rank="
                                         f'{rank}, lora_alpha={OSEDIFF_LORA_ALPHA}.')
        with torch.no_grad():
            for target, tensor in ((branch.down.weight, lora_a), (branch.up.weight, lora_b)):
                if target.shape != tensor.shape:
                    raise OSEDiffCheckpointError(f'{where}: {name} has shape {tuple(tensor.shape)}, the '
                                                 f'config builds {tuple(target.shape)}.')
                target.copy_(tensor)


def _trained_conv_in(state: Mapping[str, torch.Tensor], rank: int,
                     conv_in: torch.nn.Conv2d) -> Dict[str, torch.Tensor]:
    """OSEDiff's effective ``conv_in``: its trained base with its LoRA folded in."""
    if 'conv_in.weight' in state:  # a checkpoint without LoRA on conv_in
        return {'weight': state['conv_in.weight'], 'bias': state['conv_in.bias']}
    if 'conv_in.base_layer.weight' not in state:
        raise OSEDiffCheckpointError('state_dict_unet holds no conv_in weights.')
    weight = state['conv_in.base_layer.weight'].float()
    lora_a = [v for k, v in state.items() if k.startswith('conv_in.lora_A.')]
    lora_b = [v for k, v in state.items() if k.startswith('conv_in.lora_B.')]
    if lora_a:
        branch = LoRABranch(conv_in, rank, OSEDIFF_LORA_ALPHA)
        with torch.no_grad():
            branch.down.weight.copy_(lora_a[0])
            branch.up.weight.copy_(lora_b[0])
        weight = weight + branch.delta_weight(conv_in)
    return {'weight': weight, 'bias': state['conv_in.base_layer.bias'].float()}


def load_osediff_into(model: OneStepSR, ckpt: Mapping[str, Any]) -> None:
    """Put OSEDiff's trained tensors into a freshly built ``OneStepSR`` (unfused).

    Args:
        model: built from ``configs/osediff_sd21.py`` (or a config with the same layers).
        ckpt: :func:`read_osediff_checkpoint`'s dict.
    """
    gen = model.generator
    if gen.conv_in is None:
        raise OSEDiffCheckpointError('OSEDiff trains conv_in: build the generator with train_conv_in=True.')
    rank_unet, rank_vae = int(ckpt['rank_unet']), int(ckpt['rank_vae'])
    unet_state, vae_state = ckpt['state_dict_unet'], ckpt['state_dict_vae']
    unet_pairs = _lora_pairs(unet_state, UNET_ADAPTERS, ckpt, 'state_dict_unet')
    unet_pairs.pop('conv_in', None)  # folded into the trained conv_in below
    _copy_pairs(gen.unet_lora, unet_pairs, rank_unet, 'UNet')
    _copy_pairs(gen.vae_lora, _lora_pairs(vae_state, VAE_ADAPTERS, ckpt, 'state_dict_vae'),
                rank_vae, 'VAE encoder')
    gen.conv_in.load_state_dict(_trained_conv_in(unet_state, rank_unet, model.unet.conv_in))


def convert(checkpoint: str, out_dir: str, model_cfg: Dict[str, Any],
            extra: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Convert ``osediff.pkl`` into an export folder and a toolkit checkpoint.

    Args:
        checkpoint: OSEDiff's checkpoint.
        out_dir: output folder.
        model_cfg: the model config (``model`` of ``configs/osediff_sd21.py``).
        extra: more to record in the export description.

    Returns:
        The written files by role.
    """
    from icmsr.registry import MODELS
    ckpt = read_osediff_checkpoint(checkpoint)
    cfg = OneStepSR.inference_config(model_cfg)
    model = MODELS.build(cfg).eval()
    load_osediff_into(model, ckpt)
    info = dict(converted_from='OSEDiff', source_checkpoint=checkpoint, **(extra or {}))
    files = export_model(model, out_dir, cfg, extra=info)
    files['checkpoint'] = osp.join(out_dir, CHECKPOINT_NAME)
    atomic_torch_save(dict(meta=dict(converted_from='OSEDiff', source_checkpoint=checkpoint),
                           state_dict=model.state_dict()), files['checkpoint'])
    return files


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line."""
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description="Convert OSEDiff's osediff.pkl into an icmsr export")
    p.add_argument('checkpoint', help="OSEDiff's released checkpoint (osediff.pkl)")
    p.add_argument('--out', required=True, help='output folder')
    p.add_argument('--config', default=DEFAULT_CONFIG, help='model config (default: %(default)s)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys')
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Convert and print the written files."""
    from mmengine.config import Config
    args = parse_args(argv)
    config = Config.fromfile(args.config)
    if args.cfg_options:
        config.merge_from_dict(args.cfg_options)
    files = convert(args.checkpoint, args.out, model_config(config), extra=dict(config=args.config))
    print(json.dumps(files, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
