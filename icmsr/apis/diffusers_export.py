"""The parts of an export folder that diffusers and peft read as they are.

:func:`icmsr.apis.export_model` calls :func:`write_diffusers_files`, which adds:

* ``pytorch_lora_weights.safetensors`` - the UNet LoRA under the name and key layout
  (``unet.<module>.lora_A/B.weight``, peft ``LoraConfig`` in the ``lora_adapter_metadata``
  header) that ``StableDiffusionPipeline.load_lora_weights(export_dir)`` loads by default.
* ``adapter_config.json`` - the same UNet LoRA as a peft ``LoraConfig``
  (``LoraConfig.from_pretrained(export_dir)``).
* ``README.md`` - a model card: base model ids and revisions, LoRA settings, the
  training config and metrics when given.

The VAE-encoder LoRA (``vae_lora.safetensors``) and the trained ``conv_in``
(``unet_conv_in.safetensors``) have no place in diffusers' LoRA loader: a diffusers
pipeline gets them with :func:`icmsr.apis.lora_export.load_export_extras`.
"""
import json
import os
from typing import Any, Dict, Mapping, Optional

import torch

from icmsr.utils.atomic_io import atomic_path, atomic_write_text

DIFFUSERS_LORA_FILE = 'pytorch_lora_weights.safetensors'
PEFT_CONFIG_FILE = 'adapter_config.json'
MODEL_CARD_FILE = 'README.md'


def peft_lora_config(rank: int, alpha: float, targets: Any) -> Dict[str, Any]:
    """The fields of a peft ``LoraConfig`` describing one of our LoRA groups.

    Args:
        rank: LoRA rank.
        alpha: LoRA alpha (scale = alpha / rank).
        targets: full module names (peft matches a name or a ``.``-separated suffix).

    Returns:
        Keyword arguments of ``peft.LoraConfig``.
    """
    return dict(r=int(rank), lora_alpha=alpha, lora_dropout=0.0, bias='none', use_dora=False,
                init_lora_weights=True, target_modules=sorted(targets))


def _base_models(model_cfg: Mapping[str, Any]) -> Dict[str, str]:
    """``{component: 'id-or-folder[/subfolder][@revision]'}`` from the model config."""
    found = {}
    for key in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        sub = model_cfg.get(key) or {}
        if not isinstance(sub, Mapping):
            continue
        if sub.get('from_pretrained'):
            where = str(sub['from_pretrained'])
            where += f"/{sub['subfolder']}" if sub.get('subfolder') else ''
            if sub.get('revision'):
                where += f"@{sub['revision']}"
            elif not os.path.isdir(str(sub['from_pretrained'])):
                where += ' (revision not pinned: the hub default branch)'
            found[key] = where
        else:
            found[key] = 'random weights from an architecture config (not a released model)'
    return found


def model_card(meta: Mapping[str, Any], metrics: Optional[Mapping[str, Any]] = None) -> str:
    """The ``README.md`` of an export folder.

    Args:
        meta: The export description (``icmsr_lora.json`` content).
        metrics: ``{name: value}`` (or ``{dataset: {name: value}}``) to report.

    Returns:
        Markdown text with a Hugging Face model-card header.
    """
    model = meta.get('model') or {}
    bases = _base_models(model)
    base_id = (model.get('unet') or {}).get('from_pretrained')
    lines = ['---', 'library_name: diffusers', 'tags:', '- super-resolution', '- lora',
             '- one-step-diffusion']
    if base_id and not os.path.isabs(str(base_id)):
        lines.append(f'base_model: {base_id}')
    lines += ['---', '', '# One-step diffusion super-resolution LoRA', '',
              f"Upscaling factor x{meta.get('scale')}, one UNet step at t="
              f"{(model.get('generator') or {}).get('timestep', 999)}.", '', '## Base model', '']
    lines += [f'- {key}: `{where}`' for key, where in bases.items()]
    fingerprint = meta.get('base_fingerprint') or {}
    if fingerprint:
        lines += ['', 'Fingerprint of the frozen base the LoRA was trained on (checked at load time):', '']
        lines += [f"- {key}: `{value.get('digest')}` ({value.get('source')})"
                  for key, value in sorted(fingerprint.items())]
    lines += ['', '## LoRA', '', '| part | file | rank | alpha | layers |', '|---|---|---|---|---|']
    for part in ('unet_lora', 'vae_lora'):
        info = meta.get(part)
        if info:
            files = f"`{info['file']}`" + (f' (diffusers: `{DIFFUSERS_LORA_FILE}`)'
                                           if part == 'unet_lora' else '')
            lines.append(f"| {part.split('_')[0]} | {files} | {info['rank']} | "
                         f"{float(info['alpha']):g} | {len(info['targets'])} |")
    if meta.get('conv_in'):
        lines.append(f"| unet conv_in (full weights) | `{meta['conv_in']}` | - | - | 1 |")
    lines += ['', '## Use it', '', '```python',
              'from icmsr.apis import ICMSRPipeline',
              'pipe = ICMSRPipeline.from_export("<this folder>")',
              'sr = pipe("photo.png").images[0]', '```', '',
              f'diffusers alone: `pipe.load_lora_weights("<this folder>")` loads the UNet LoRA '
              f'(`{DIFFUSERS_LORA_FILE}`); `icmsr.apis.load_export_extras(pipe, "<this folder>")` '
              'adds the VAE-encoder LoRA and conv_in.', '']
    if meta.get('config') or meta.get('source_checkpoint'):
        lines += ['## Training', '']
        if meta.get('config'):
            lines.append(f"- config: `{meta['config']}`")
        if meta.get('source_checkpoint'):
            lines.append(f"- checkpoint: `{meta['source_checkpoint']}`")
        lines.append('')
    lines += ['## Model config', '', '```json', json.dumps(model, indent=2, sort_keys=True), '```', '']
    if metrics:
        lines += ['## Metrics', '', '| set | metric | value |', '|---|---|---|']
        for name, value in metrics.items():
            pairs = value.items() if isinstance(value, Mapping) else [(name, value)]
            group = name if isinstance(value, Mapping) else '-'
            lines += [f'| {group} | {k} | {v:.4g} |' if isinstance(v, float) else f'| {group} | {k} | {v} |'
                      for k, v in pairs]
        lines.append('')
    return '\n'.join(lines)


def write_diffusers_files(unet_state: Dict[str, torch.Tensor], unet_metadata: Dict[str, str],
                          meta: Dict[str, Any], out_dir: str,
                          metrics: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """Write the diffusers LoRA file, the peft adapter config and the model card.

    Args:
        unet_state: ``unet.<module>.lora_A/B.weight`` tensors.
        unet_metadata: safetensors header (with the ``lora_adapter_metadata`` LoraConfig).
        meta: The export description (``unet_lora`` rank/alpha/targets are read).
        out_dir: The export folder.
        metrics: Metrics for the model card.

    Returns:
        The written files by role.
    """
    from safetensors.torch import save_file
    files = dict(diffusers_lora=os.path.join(out_dir, DIFFUSERS_LORA_FILE),
                 peft_config=os.path.join(out_dir, PEFT_CONFIG_FILE),
                 model_card=os.path.join(out_dir, MODEL_CARD_FILE))
    with atomic_path(files['diffusers_lora']) as tmp:
        save_file(unet_state, tmp, metadata=unet_metadata)
    info = meta['unet_lora']
    peft_cfg = dict(peft_lora_config(info['rank'], info['alpha'], info['targets']),
                    peft_type='LORA', task_type=None)
    atomic_write_text(files['peft_config'], json.dumps(peft_cfg, indent=2, sort_keys=True))
    atomic_write_text(files['model_card'], model_card(meta, metrics))
    return files


__all__ = ['write_diffusers_files', 'model_card', 'peft_lora_config',
           'DIFFUSERS_LORA_FILE', 'PEFT_CONFIG_FILE', 'MODEL_CARD_FILE']
