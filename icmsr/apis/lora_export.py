"""Export the trained generator as LoRA files in the diffusers/peft layout, and load them back.

An export folder holds:

* ``unet_lora.safetensors`` - keys ``unet.<module>.lora_A.weight`` (down) and
  ``unet.<module>.lora_B.weight`` (up), the layout of diffusers' LoRA files. Its
  ``lora_adapter_metadata`` header carries the peft ``LoraConfig`` (rank, alpha,
  target modules), so plain diffusers loads it too:
  ``unet.load_lora_adapter(folder, weight_name='unet_lora.safetensors', prefix='unet')``.
* ``vae_lora.safetensors`` - the VAE-encoder LoRA, keys ``vae.<module>.lora_A/B.weight``.
* ``unet_conv_in.safetensors`` - full ``conv_in.weight``/``conv_in.bias`` when the
  generator trained its own ``conv_in``.
* ``pytorch_lora_weights.safetensors``, ``adapter_config.json``, ``README.md`` - the
  UNet LoRA under diffusers' default name, its peft config and a model card
  (:mod:`icmsr.apis.diffusers_export`).
* ``icmsr_lora.json`` - what is needed to rebuild the model: its ``OneStepSR``
  config (the base model of every component, LoRA rank/alpha/targets, the
  timestep, the upscaling factor, prompt and test settings), the fingerprint of
  the frozen base the LoRA was trained on, and LoRA rank/alpha/targets.

:func:`build_model_from_export` rebuilds the model from the base SD weights plus
these files (and refuses a base whose fingerprint differs); ``merged=True`` in
:func:`export_model` also writes ``merged/unet`` and ``merged/vae`` with the LoRA
folded into the weights.
"""
import copy
import json
import os
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from icmsr.models.base_fingerprint import check_fingerprint
from icmsr.models.generator import OneStepGenerator
from icmsr.models.lora import module_name
from icmsr.utils.atomic_io import atomic_path, atomic_write
from .diffusers_export import write_diffusers_files

FORMAT_VERSION = 2
META_FILE = 'icmsr_lora.json'
UNET_FILE, VAE_FILE = 'unet_lora.safetensors', 'vae_lora.safetensors'
CONV_IN_FILE = 'unet_conv_in.safetensors'
_PEFT_METADATA_KEY = 'lora_adapter_metadata'  # the header key diffusers reads


def _branch_state(branches: nn.ModuleDict, prefix: str) -> Dict[str, torch.Tensor]:
    """``{prefix.<module>.lora_A.weight: down, ...lora_B.weight: up}`` as contiguous float32."""
    state = {}
    for key, branch in branches.items():
        name = module_name(key)
        state[f'{prefix}.{name}.lora_A.weight'] = branch.down.weight.detach().float().cpu().contiguous()
        state[f'{prefix}.{name}.lora_B.weight'] = branch.up.weight.detach().float().cpu().contiguous()
    return state


def _rank_alpha(branches: nn.ModuleDict) -> Tuple[int, float]:
    """Rank and alpha shared by all branches (raises if they differ)."""
    pairs = {(b.up.weight.shape[1], round(b.scale * b.up.weight.shape[1], 6)) for b in branches.values()}
    if len(pairs) != 1:
        raise ValueError(f'LoRA branches have mixed (rank, alpha) {sorted(pairs)}; cannot describe them '
                         'with one LoraConfig.')
    return pairs.pop()


def _peft_metadata(prefix: str, branches: nn.ModuleDict) -> str:
    """JSON of the peft LoraConfig of ``branches``, keys prefixed as diffusers expects."""
    rank, alpha = _rank_alpha(branches)
    config = dict(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias='none', use_dora=False,
                  target_modules=sorted(module_name(k) for k in branches))
    return json.dumps({f'{prefix}.{k}': v for k, v in config.items()}, sort_keys=True)


def export_model(model: nn.Module, out_dir: str, model_cfg: Dict[str, Any],
                 extra: Optional[Dict[str, Any]] = None, merged: bool = False,
                 metrics: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Write a model's LoRA (and ``conv_in``) files plus the JSON description.

    Args:
        model: A trained, *unfused* ``OneStepSR`` (or subclass).
        out_dir: Output folder (created).
        model_cfg: The ``OneStepSR`` config the model was built from
            (``OneStepSR.inference_config`` of the training config).
        extra: Anything else to record (source checkpoint, config file, version...).
        merged: Also save ``merged/unet`` and ``merged/vae`` with the LoRA folded in
            (full diffusers model folders, loadable with ``from_pretrained``).
        metrics: Metrics reported in the model card (``README.md``).

    Returns:
        The written files by role.
    """
    generator: OneStepGenerator = model.generator
    if getattr(generator, 'lora_fused', False):
        raise RuntimeError('Export the LoRA before fusing it into the base weights.')
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    unet_rank, unet_alpha = _rank_alpha(generator.unet_lora)
    files['unet'] = os.path.join(out_dir, UNET_FILE)
    with atomic_path(files['unet']) as tmp:
        save_file(_branch_state(generator.unet_lora, 'unet'), tmp,
                  metadata={'format': 'pt', _PEFT_METADATA_KEY: _peft_metadata('unet', generator.unet_lora)})
    cfg = _plain(model_cfg)
    meta = dict(extra or {})
    meta.update(format_version=FORMAT_VERSION, model=cfg,
                base_model=(cfg.get('unet') or {}).get('from_pretrained'),
                base_fingerprint=copy.deepcopy(model.base_fingerprint), scale=model.scale,
                unet_lora=dict(rank=unet_rank, alpha=unet_alpha, file=UNET_FILE,
                               targets=sorted(module_name(k) for k in generator.unet_lora)))
    if len(generator.vae_lora):
        files['vae'] = os.path.join(out_dir, VAE_FILE)
        with atomic_path(files['vae']) as tmp:
            save_file(_branch_state(generator.vae_lora, 'vae'), tmp,
                      metadata={'format': 'pt', _PEFT_METADATA_KEY: _peft_metadata('vae', generator.vae_lora)})
        rank, alpha = _rank_alpha(generator.vae_lora)
        meta['vae_lora'] = dict(rank=rank, alpha=alpha, file=VAE_FILE,
                                targets=sorted(module_name(k) for k in generator.vae_lora))
    else:
        meta['vae_lora'] = None
    if generator.conv_in is not None:
        files['conv_in'] = os.path.join(out_dir, CONV_IN_FILE)
        with atomic_path(files['conv_in']) as tmp:
            save_file({f'conv_in.{k}': v.detach().float().cpu().contiguous()
                       for k, v in generator.conv_in.state_dict().items()}, tmp)
    meta['conv_in'] = CONV_IN_FILE if generator.conv_in is not None else None
    # The live scheduler's own config: ``DDPMScheduler.from_config(meta['scheduler'])``.
    meta['scheduler'] = _plain(dict(model.scheduler.config))
    if metrics:
        meta['metrics'] = _plain(metrics)
    files['meta'] = os.path.join(out_dir, META_FILE)
    with atomic_write(files['meta'], 'w') as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    files.update(write_diffusers_files(
        _branch_state(generator.unet_lora, 'unet'),
        {'format': 'pt', _PEFT_METADATA_KEY: _peft_metadata('unet', generator.unet_lora)},
        meta, out_dir, metrics))
    if merged:
        files.update(_save_merged(generator, os.path.join(out_dir, 'merged')))
    return files


def _save_merged(generator: OneStepGenerator, folder: str) -> Dict[str, str]:
    """Fold the LoRA into copies of the UNet and VAE and ``save_pretrained`` them."""
    from icmsr.models.generator import fuse_generator_lora
    twin = copy.deepcopy(generator)  # the caller's generator stays unfused
    fuse_generator_lora(twin)
    paths = {'merged_unet': os.path.join(folder, 'unet'), 'merged_vae': os.path.join(folder, 'vae')}
    twin.unet.save_pretrained(paths['merged_unet'])
    twin.vae.save_pretrained(paths['merged_vae'])
    return paths


def _read_tensors(path: str) -> Dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with an error that names the file.

    Args:
        path: a ``.safetensors`` file of an export.

    Returns:
        Its tensors.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path} is missing from the export; export it again with '
                                'tools/export_lora.py.')
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error types for broken headers/data
        raise OSError(f'{path} is not a readable safetensors file ({type(err).__name__}: {err}); '
                      'it may be truncated - export it again with tools/export_lora.py.') from err


def _load_branches(branches: nn.ModuleDict, state: Dict[str, torch.Tensor], prefix: str, path: str) -> None:
    """Copy ``prefix.<module>.lora_A/B.weight`` from ``state`` into ``branches`` (exact key match)."""
    expected = set(_branch_state(branches, prefix))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f'{path}: LoRA keys do not match the generator built from the description '
            f'({len(missing)} missing, e.g. {sorted(missing)[:2]}; {len(unexpected)} unexpected, '
            f'e.g. {sorted(unexpected)[:2]}). Was it exported from a model with other LoRA targets?')
    for key, branch in branches.items():
        name = module_name(key)
        with torch.no_grad():
            for part, module in (('lora_A', branch.down), ('lora_B', branch.up)):
                tensor = state[f'{prefix}.{name}.{part}.weight']
                if tensor.shape != module.weight.shape:
                    raise ValueError(f'{path}: {prefix}.{name}.{part} has shape {tuple(tensor.shape)}, '
                                     f'the generator expects {tuple(module.weight.shape)} (rank mismatch?).')
                module.weight.copy_(tensor)


def load_model_lora(model: nn.Module, export_dir: str) -> None:
    """Load exported LoRA (and ``conv_in``) weights into a model built with the same settings.

    The base fingerprint recorded in the export is checked against the model's
    (``model.base_check`` says whether a mismatch is an error or a warning).

    Args:
        model: A freshly built, unfused ``OneStepSR``.
        export_dir: Folder written by :func:`export_model`.
    """
    meta = read_description(export_dir)
    check_fingerprint(meta.get('base_fingerprint'), model.base_fingerprint,
                      f'The export {export_dir!r}', model.base_check)
    generator = model.generator
    path = os.path.join(export_dir, meta['unet_lora']['file'])
    _load_branches(generator.unet_lora, _read_tensors(path), 'unet', path)
    if meta.get('vae_lora'):
        path = os.path.join(export_dir, meta['vae_lora']['file'])
        _load_branches(generator.vae_lora, _read_tensors(path), 'vae', path)
    elif len(generator.vae_lora):
        raise ValueError(f'{export_dir} has no VAE LoRA but the generator has one; rebuild it with '
                         'vae_lora_targets=None.')
    if meta.get('conv_in'):
        if generator.conv_in is None:
            raise ValueError(f'{export_dir} holds a trained conv_in; build the generator with '
                             'train_conv_in=True.')
        state = _read_tensors(os.path.join(export_dir, meta['conv_in']))
        generator.conv_in.load_state_dict({k.removeprefix('conv_in.'): v for k, v in state.items()})


def read_description(export_dir: str) -> Dict[str, Any]:
    """Read and check ``icmsr_lora.json`` of an export folder.

    Args:
        export_dir: The export folder.

    Returns:
        The description dict.
    """
    path = os.path.join(export_dir, META_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{export_dir!r} is not an ICM-SR LoRA export: {META_FILE} is missing. '
                                'Create one with tools/export_lora.py.')
    with open(path) as f:
        meta = json.load(f)
    if meta.get('format_version') != FORMAT_VERSION:
        raise ValueError(f'{path}: format_version {meta.get("format_version")} is not supported '
                         f'(this toolkit reads {FORMAT_VERSION}).')
    return meta


def _plain(cfg: Any) -> Any:
    """Config objects -> plain JSON-friendly dicts/lists (tuples become lists)."""
    if cfg is None:
        return None
    if hasattr(cfg, 'to_dict'):
        cfg = cfg.to_dict()
    if isinstance(cfg, dict):
        return {str(k): _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def override_base_model(cfg: Dict[str, Any], base_model: str, keys: Tuple[str, ...]) -> None:
    """Point the component configs ``cfg[key]`` at ``base_model`` (in place).

    Args:
        cfg: A model config.
        base_model: SD folder or hub id.
        keys: Component entries to redirect (e.g. ``('unet', 'vae', 'scheduler')``).
    """
    for key in keys:
        sub = cfg.get(key)
        if isinstance(sub, dict):
            sub.pop('from_config', None)
            sub['from_pretrained'] = base_model


def build_model_from_export(export_dir: str, base_model: Optional[str] = None,
                            base_check: str = 'error') -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the ``OneStepSR`` model from the base weights and an export folder.

    Args:
        export_dir: Folder written by :func:`export_model`.
        base_model: Override the base model folder/hub id of every component
            (e.g. a local copy of ``CompVis/stable-diffusion-v1-4``); the base
            fingerprint must still match.
        base_check: ``'error'`` (default) or ``'warn'`` when the base differs from
            the one the LoRA was trained on.

    Returns:
        The model (eval mode, CPU, float32, unfused) and the description.
    """
    meta = read_description(export_dir)
    cfg = copy.deepcopy(meta['model'])
    if base_model is not None:
        override_base_model(cfg, base_model, ('unet', 'vae', 'scheduler', 'text_encoder', 'tokenizer'))
    cfg['base_check'] = base_check
    from icmsr.registry import MODELS
    model = MODELS.build(cfg)
    load_model_lora(model, export_dir)
    return model.eval(), meta


def load_export_extras(pipeline: Any, export_dir: str, adapter_name: str = 'icmsr_vae') -> Dict[str, bool]:
    """Give a diffusers pipeline the export's VAE-encoder LoRA and trained ``conv_in``.

    ``pipeline.load_lora_weights(export_dir)`` loads the UNet LoRA only; this adds the
    rest of the generator: the VAE-encoder LoRA as a peft adapter on ``pipeline.vae``
    and the trained ``conv_in`` copied over ``pipeline.unet.conv_in``. (The latter
    changes the UNet for text-to-image use too: it is the super-resolution input layer.)

    Args:
        pipeline: Anything with ``unet`` and ``vae`` attributes (a ``StableDiffusionPipeline``).
        export_dir: Folder written by :func:`icmsr.apis.export_model`.
        adapter_name: Name of the VAE adapter.

    Returns:
        ``{'vae_lora': loaded?, 'conv_in': loaded?}``.
    """
    meta = read_description(export_dir)
    done = dict(vae_lora=False, conv_in=False)
    info = meta.get('vae_lora')
    if info:
        # weight_name makes diffusers read the LoraConfig from the file header.
        pipeline.vae.load_lora_adapter(export_dir, weight_name=info['file'], prefix='vae',
                                       adapter_name=adapter_name)
        done['vae_lora'] = True
    if meta.get('conv_in'):
        path = os.path.join(export_dir, meta['conv_in'])
        state = {k.removeprefix('conv_in.'): v for k, v in load_file(path).items()}
        conv_in: nn.Module = pipeline.unet.conv_in
        try:
            conv_in.load_state_dict({k: v.to(conv_in.weight.dtype) for k, v in state.items()})
        except RuntimeError as err:
            raise ValueError(f'{path}: conv_in does not fit this UNet ({err}).') from err
        done['conv_in'] = True
    return done


__all__ = ['export_model', 'load_model_lora', 'build_model_from_export', 'read_description',
           'load_export_extras']
