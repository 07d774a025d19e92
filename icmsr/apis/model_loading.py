"""Build the inference model (``OneStepSR``) from any config or an export, and load trained weights.

Inference needs only the generator (VAE, UNet, their LoRA) and the text
encoder: :meth:`OneStepSR.inference_config` keeps exactly that part of a
training config, so the teacher's T2I-Adapters, the auxiliary LoRA and the
LPIPS network are neither built nor loaded.

Weights can be:

* an MMEngine checkpoint of ``ICMSR`` or ``OneStepSR`` (``.pth``; the trained
  generator tensors and the base fingerprint are used),
* an export folder written by ``tools/export_lora.py`` (``icmsr_lora.json`` + safetensors),
* a safetensors file inside such a folder (its folder is used).

Either way the base fingerprint stored with the weights must match the base the
config builds (``base_check='warn'`` for deliberate transfers).
"""
import os
import re
from typing import Any, Dict, Optional, Union

import torch

from icmsr.models.backbones import resolve_dtype
from icmsr.models.one_step_sr import OneStepSR
from icmsr.registry import MODELS
from icmsr.models.generator import fuse_generator_lora
from .lora_export import META_FILE, build_model_from_export, load_model_lora, read_description

_ANSI = re.compile(r'\x1b\[[0-9;]*m')


class UntrainedModelError(ValueError):
    """Inference was asked for without trained weights."""


def default_device() -> str:
    """The device inference uses when none is given: CUDA when available, else the CPU."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def model_config(config: Any) -> Dict[str, Any]:
    """The ``model`` dict of a config file or object (or the dict itself).

    Args:
        config: config file path, ``mmengine.Config``, or a model config dict.

    Returns:
        A plain dict copy.
    """
    from mmengine.config import Config
    if isinstance(config, str):
        if not os.path.isfile(config):
            raise FileNotFoundError(f'Config file {config!r} does not exist.')
        config = Config.fromfile(config)
    if isinstance(config, Config):
        if 'model' not in config:
            raise KeyError(f'Config {config.filename!r} has no `model` entry.')
        config = config.model
    return config.to_dict() if hasattr(config, 'to_dict') else dict(config)


def _read_state_dict(path: str, trust: bool = False) -> Dict[str, Any]:
    """The state dict of a ``.pth`` file, read with ``weights_only=True`` unless ``trust``."""
    import pickle

    from icmsr.compat import (checkpoint_refusal_message, trusted_checkpoint_loading,
                              untrusted_checkpoint_loading)
    try:
        if trust:
            with trusted_checkpoint_loading():
                ckpt = torch.load(path, map_location='cpu', weights_only=False)
        else:
            # Whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says: only the trust flag relaxes this.
            with untrusted_checkpoint_loading():
                ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(checkpoint_refusal_message(path, err)) from err
    except Exception as err:  # torch raises several types for unreadable files
        reason = _ANSI.sub('', str(err)).split('\n')[0][:300]
        raise RuntimeError(f'Could not read checkpoint {path!r} ({type(err).__name__}: {reason}); '
                           'is the file complete?') from err
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{path!r} does not hold a state dict.')
    return state


def load_checkpoint_weights(model: OneStepSR, path: str, trust: bool = False) -> None:
    """Load the trained tensors of a checkpoint into an inference model.

    Training-only tensors (auxiliary LoRA) are skipped; every trained tensor of
    ``model`` must be present; the base fingerprint is checked (see
    ``model.base_check``).

    Args:
        model: A freshly built ``OneStepSR``.
        path: ``.pth`` checkpoint (MMEngine ``{'state_dict': ...}`` or a bare state dict).
        trust: unpickle everything (only for files you trust: unpickling can run code).
    """
    state = _read_state_dict(path, trust)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    wanted = model.trainable_state_keys()
    missing = sorted(wanted - set(state))
    if missing:
        raise KeyError(f'Checkpoint {path!r} lacks generator weights {missing[:3]} '
                       f'({len(missing)} missing). Is it a checkpoint of this config?')
    extra = sorted(k for k in state if k.startswith('generator.') and k not in wanted)
    if extra:
        raise KeyError(f'Checkpoint {path!r} has generator keys this config does not build, e.g. '
                       f'{extra[:3]}: LoRA targets, rank or conv_in differ from the config.')
    sub = {k: state[k] for k in wanted}
    if '_extra_state' in state:
        sub['_extra_state'] = state['_extra_state']
    else:
        model.set_extra_state(None)  # warns: no fingerprint to check
    model.load_state_dict(sub, strict=True)


def init_model(config: Any = None, weights: Optional[str] = None,
               device: Optional[Union[str, torch.device]] = None, dtype: Any = 'float32',
               fuse: bool = True, base_model: Optional[str] = None, scale: Optional[int] = None,
               allow_untrained: bool = False, base_check: str = 'error',
               trust_checkpoint: bool = False) -> OneStepSR:
    """Build the inference model and load its weights.

    Args:
        config: Config file, ``Config`` or model dict (any training config: only its
            ``OneStepSR`` part is built). May be None when ``weights`` is an export folder.
        weights: ``.pth`` checkpoint or export folder.
        device: Device (default: CUDA when available).
        dtype: ``float32``, ``float16`` or ``bfloat16`` for the frozen weights
            and the computation.
        fuse: Fold the LoRA into the base weights (faster; outputs equal up to rounding).
        base_model: Folder/hub id overriding an export's base model.
        scale: Override the upscaling factor.
        allow_untrained: Accept ``weights=None`` (untrained LoRA: the base model's
            one-step prediction; for smoke tests and benchmarks).
        base_check: ``'error'`` or ``'warn'`` when the weights were trained on another base.
        trust_checkpoint: read a ``.pth`` with full unpickling (``--trust-checkpoint``; only
            for files you trust).

    Returns:
        The model in eval mode on ``device``, with ``model.description`` saying where it came from.
    """
    torch_dtype = resolve_dtype(dtype) or torch.float32
    export_dir = None
    if weights is None:
        if not allow_untrained:
            raise UntrainedModelError(
                'No trained weights given: the LoRA would be untrained. Pass a checkpoint or an '
                'export folder (tools: --weights), or allow_untrained=True (--allow-untrained) '
                'on purpose.')
    elif os.path.isdir(weights) and os.path.isfile(os.path.join(weights, META_FILE)):
        export_dir = weights
    elif weights.endswith('.safetensors') and os.path.isfile(
            os.path.join(os.path.dirname(weights) or '.', META_FILE)):
        export_dir = os.path.dirname(weights) or '.'
    elif not os.path.exists(weights):
        raise FileNotFoundError(f'Weights {weights!r} do not exist.')
    if export_dir is not None and config is None:
        model, meta = build_model_from_export(export_dir, base_model, base_check)
        description = dict(meta)
    else:
        if config is None:
            raise ValueError('Give a config, or weights that are an export folder (tools/export_lora.py).')
        cfg = OneStepSR.inference_config(model_config(config))
        cfg['base_check'] = base_check
        model = MODELS.build(cfg)
        description = dict(config=config if isinstance(config, str) else None, weights=weights)
        if export_dir is not None:
            load_model_lora(model, export_dir)
            description.update(read_description(export_dir))
        elif weights is not None:
            load_checkpoint_weights(model, weights, trust_checkpoint)
    if scale is not None:
        model.scale = int(scale)
    model.description = description
    model.eval().requires_grad_(False)
    if fuse:
        fuse_generator_lora(model.generator)
    # The noise schedule is the scheduler's float32 table, not a module buffer: casting the
    # weights leaves it alone (x0 divides by sqrt(abar)).
    model.to(device=device or default_device(), dtype=torch_dtype)
    return model
