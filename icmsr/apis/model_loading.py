"""Build the inference model (generator + prompt encoder) and load trained weights.

Inference needs only the generator (VAE, UNet, their LoRA) and the text
encoder: the teacher's T2I-Adapters and the auxiliary LoRA are training-only,
so they are neither built nor loaded. The generator here owns its UNet, which
makes fusing the LoRA into the base weights safe.

Weights can be:

* an MMEngine checkpoint of ``ICMSR`` (``.pth``; only ``generator.*`` keys are used),
* an export folder written by ``tools/export_lora.py`` (``icmsr_lora.json`` + safetensors),
* a safetensors file inside such a folder (its folder is used).
"""
import copy
import os
from typing import Any, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

from icmsr.models.backbones import resolve_dtype
from icmsr.registry import MODELS
from .fuse import fuse_generator_lora
from .lora_export import (META_FILE, build_generator_from_export, load_generator_lora,
                          override_base_model, read_description)


class SRInferenceModel(nn.Module):
    """The parts of ICM-SR that run at inference.

    Args:
        generator: An ``OneStepGenerator`` that owns its UNet and VAE.
        text: A ``PromptEncoder``.
        scale: Upscaling factor of the model.
        description: Where the model came from (config / export description), for the record.
    """

    def __init__(self, generator: nn.Module, text: nn.Module, scale: int = 4,
                 description: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.generator = generator
        self.text = text
        self.scale = int(scale)
        self.description = description or {}

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings of ``prompts``; the configured suffix is added to non-empty prompts.

        Args:
            prompts: Prompt strings.

        Returns:
            ``(B, 77, D)`` embeddings on the model's device.
        """
        suffix = getattr(self.text, 'suffix', '')
        return self.text.encode([p + suffix if p else p for p in prompts])


def _model_cfg(config: Any) -> Dict[str, Any]:
    """The ``model`` dict of a config file/object, or the dict itself if it is a model config."""
    from mmengine.config import Config
    if isinstance(config, str):
        if not os.path.isfile(config):
            raise FileNotFoundError(f'Config file {config!r} does not exist.')
        config = Config.fromfile(config)
    if isinstance(config, Config):
        if 'model' not in config:
            raise KeyError(f'Config {config.filename!r} has no `model` entry.')
        config = config.model
    cfg = config.to_dict() if hasattr(config, 'to_dict') else copy.deepcopy(dict(config))
    missing = [k for k in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler') if k not in cfg]
    if missing:
        raise KeyError(f'Model config lacks {missing}; expected an ICMSR model config '
                       '(see icmsr.models.icmsr_model_config).')
    return cfg


def model_scale(model_cfg: Dict[str, Any]) -> int:
    """The upscaling factor a model config trains for (preprocessor scale, else degradation scale, else 4)."""
    pre = model_cfg.get('data_preprocessor') or {}
    if 'scale' in pre:
        return int(pre['scale'])
    return int((pre.get('degradation') or {}).get('scale', 4))


def generator_and_text_cfgs(model_cfg: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Stand-alone ``OneStepGenerator`` and ``PromptEncoder`` configs from an ``ICMSR`` config.

    Args:
        model_cfg: The ``ICMSR`` model config.

    Returns:
        ``{'generator': ..., 'text': ...}``; the generator config owns its UNet config.
    """
    gen = dict(model_cfg.get('generator') or {})
    gen.setdefault('type', 'OneStepGenerator')
    for key in ('unet', 'vae', 'scheduler'):
        gen[key] = copy.deepcopy(model_cfg[key])
    text = dict(model_cfg.get('text') or {})
    text.setdefault('type', 'PromptEncoder')
    text['text_encoder'] = copy.deepcopy(model_cfg['text_encoder'])
    text['tokenizer'] = copy.deepcopy(model_cfg['tokenizer'])
    return dict(generator=gen, text=text)


def load_checkpoint_into_generator(generator: nn.Module, path: str) -> None:
    """Load the ``generator.*`` tensors of an ``ICMSR`` checkpoint.

    The checkpoint is read with ``weights_only=True`` (the allow-list of
    :mod:`icmsr.compat` covers our own Runner checkpoints).

    Args:
        generator: The freshly built generator.
        path: ``.pth`` checkpoint (MMEngine ``{'state_dict': ...}`` or a bare state dict).
    """
    import icmsr  # noqa: F401  (applies the checkpoint allow-list)
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises several types for unreadable/unsafe files
        raise RuntimeError(f'Could not read checkpoint {path!r}: '
                           f'{type(err).__name__}: {str(err)[:300]}') from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{path!r} does not hold a state dict.')
    sub = {}
    for key, value in state.items():
        for prefix in ('generator.', 'module.generator.'):
            if key.startswith(prefix):
                sub[key[len(prefix):]] = value
    names = set(_trainable_names(generator))
    missing = sorted(names - set(sub))
    if not sub or missing:
        raise KeyError(f'Checkpoint {path!r} lacks generator weights {missing[:3]} '
                       f'({len(missing)} missing). Is it an ICMSR checkpoint of this config?')
    result = generator.load_state_dict(sub, strict=False)
    if result.unexpected_keys:
        raise KeyError(f'Checkpoint {path!r} has generator keys this config does not build, e.g. '
                       f'{result.unexpected_keys[:3]}: LoRA targets, rank or conv_in differ from the config.')


def _trainable_names(generator: nn.Module) -> Sequence[str]:
    """State-dict names of the generator's trainable tensors (LoRA, conv_in copy)."""
    ids = {id(p) for p in generator.trainable_parameters()}
    return [n for n, p in generator.named_parameters() if id(p) in ids]


def init_model(config: Any = None, weights: Optional[str] = None, device: Union[str, torch.device] = 'cpu',
               dtype: Any = 'float32', fuse: bool = True, base_model: Optional[str] = None,
               scale: Optional[int] = None) -> SRInferenceModel:
    """Build the inference model and load its weights.

    Args:
        config: Config file, ``Config`` or ``ICMSR`` model dict. May be None when
            ``weights`` is an export folder (its description has everything).
        weights: ``.pth`` checkpoint, export folder, or None (untrained LoRA:
            the base model's one-step prediction; for smoke tests).
        device: Device.
        dtype: ``float32``, ``float16`` or ``bfloat16`` for the frozen weights
            and the computation.
        fuse: Fold the LoRA into the base weights (faster; outputs equal up to rounding).
        base_model: Folder/hub id overriding the export's base model.
        scale: Override the upscaling factor.

    Returns:
        The model in eval mode on ``device``.
    """
    torch_dtype = resolve_dtype(dtype) or torch.float32
    export_dir = None
    if weights is not None:
        if os.path.isdir(weights) and os.path.isfile(os.path.join(weights, META_FILE)):
            export_dir = weights
        elif weights.endswith('.safetensors') and os.path.isfile(
                os.path.join(os.path.dirname(weights) or '.', META_FILE)):
            export_dir = os.path.dirname(weights) or '.'
        elif not os.path.exists(weights):
            raise FileNotFoundError(f'Weights {weights!r} do not exist.')
    if export_dir is not None and config is None:
        generator, meta = build_generator_from_export(export_dir, base_model)
        text_cfg = copy.deepcopy(meta['prompt_encoder'])
        if base_model is not None:
            override_base_model(text_cfg, base_model, ('text_encoder', 'tokenizer'))
        text = MODELS.build(text_cfg)
        model = SRInferenceModel(generator, text, scale or meta.get('scale', 4), meta)
    else:
        if config is None:
            raise ValueError('Give a config, or weights that are an export folder (tools/export_lora.py).')
        model_cfg = _model_cfg(config)
        cfgs = generator_and_text_cfgs(model_cfg)
        generator = MODELS.build(cfgs['generator'])
        text = MODELS.build(cfgs['text'])
        model = SRInferenceModel(generator, text, scale or model_scale(model_cfg),
                                 dict(config=str(config) if isinstance(config, str) else None))
        if export_dir is not None:
            load_generator_lora(generator, export_dir)
            model.description.update(read_description(export_dir))
        elif weights is not None:
            load_checkpoint_into_generator(generator, weights)
    model.eval().requires_grad_(False)
    if fuse:
        fuse_generator_lora(model.generator)
    # The noise schedule is the scheduler's float32 table, not a module buffer: casting the
    # weights leaves it alone (x0 divides by sqrt(abar)).
    model.to(device=device, dtype=torch_dtype)
    return model
