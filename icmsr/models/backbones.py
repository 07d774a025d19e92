"""Build the diffusion components from a hub id, a local folder or a config dict.

Every builder takes the same three ways in:

* ``from_pretrained='CompVis/stable-diffusion-v1-4', subfolder='unet'`` - a hub id
  (downloaded into the Hugging Face cache when online) or a local folder laid
  out like the hub repository (``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``, ``scheduler/`` subfolders; an adapter folder holds
  ``config.json`` and its weights directly).
* ``from_config=dict(...)`` - an architecture dict with random weights (the
  tiny stack of ``configs/icmsr_tiny.py``, the SD v1-4 layout of
  ``configs/_base_/models/sd14_arch.py``): tests, demos and memory benchmarks.
  Tokenizers are data and load ``from_pretrained`` only.

The builders are registered as functions in ``MODELS`` under ``SD*`` names, so a
config says ``unet=dict(type='SDUNet', from_pretrained=..., subfolder='unet')``.
diffusers classes themselves are not registered (importing icmsr stays cheap).
"""
import os
import re
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn as nn

from icmsr.registry import MODELS
from icmsr.user_errors import UserError

_HUB_ID = re.compile(r'^[\w.-]+/[\w.-]+$')

# Which public weights a component of this toolkit expects, for error messages.
_DOWNLOAD_HINT = (
    'ICM-SR uses CompVis/stable-diffusion-v1-4 (unet, vae, text_encoder, tokenizer, '
    'scheduler) and the TencentARC adapters TencentARC/t2iadapter_color_sd14v1 and '
    'TencentARC/t2iadapter_canny_sd14v1. Download them on a machine with internet, e.g. '
    '`huggingface-cli download CompVis/stable-diffusion-v1-4 --local-dir '
    'weights/stable-diffusion-v1-4` (same for each adapter into weights/<name>), then point '
    'the configs at the folders with the environment variables they read: '
    'ICMSR_SD14=weights/stable-diffusion-v1-4, '
    'ICMSR_ADAPTER_COLOR=weights/t2iadapter_color_sd14v1, '
    'ICMSR_ADAPTER_CANNY=weights/t2iadapter_canny_sd14v1 (or set '
    "from_pretrained='weights/<name>' in the config), or pre-fill the Hugging Face cache "
    '($HF_HOME) and keep the hub id. Offline, set HF_HUB_OFFLINE=1 so nothing is retried.')


class PretrainedWeightsError(UserError, FileNotFoundError):
    """Raised when pretrained weights are neither on disk nor downloadable."""


def resolve_dtype(dtype: Optional[Any]) -> Optional[torch.dtype]:
    """Turn ``'float16'``/``'bf16'``/``torch.float16``/``None`` into a torch dtype.

    Args:
        dtype: a dtype, its name, or None.

    Returns:
        The torch dtype or None.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    aliases = {'fp16': 'float16', 'half': 'float16', 'bf16': 'bfloat16',
               'fp32': 'float32', 'float': 'float32'}
    name = aliases.get(str(dtype), str(dtype))
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise ValueError(f'Unknown dtype {dtype!r}; use float32, float16 or bfloat16.')
    return getattr(torch, name)


def local_weights_problem(what: str, path: str, subfolder: Optional[str]) -> Optional[str]:
    """Why ``from_pretrained=path`` cannot load from disk, or None (found, or a hub id).

    A path that is no local folder counts as a hub id when it looks like one
    (``owner/name``); the hub itself is not asked.

    Args:
        what: The component, for the message (``'UNet'``).
        path: The ``from_pretrained`` value.
        subfolder: Its ``subfolder``, or None.

    Returns:
        A message naming the folder and how to get the weights, or None.
    """
    where = f"'{path}'" + (f" (subfolder '{subfolder}')" if subfolder else '')
    local = os.path.isdir(os.path.expanduser(path))
    if not local and not _HUB_ID.match(path):
        return f'{what}: local folder {where} does not exist. {_DOWNLOAD_HINT}'
    if local and subfolder and not os.path.isdir(os.path.join(os.path.expanduser(path),
                                                              subfolder)):
        return f'{what}: {where} has no subfolder {subfolder!r}. {_DOWNLOAD_HINT}'
    return None


def _load_pretrained(loader: Callable[..., Any], what: str, path: str,
                     subfolder: Optional[str], **kwargs: Any) -> Any:
    """Call ``loader(path, subfolder=..., **kwargs)`` with one clear error on failure."""
    where = f"'{path}'" + (f" (subfolder '{subfolder}')" if subfolder else '')
    problem = local_weights_problem(what, path, subfolder)
    if problem:
        raise PretrainedWeightsError(problem)
    if os.path.isdir(os.path.expanduser(path)):
        path = os.path.expanduser(path)
    if subfolder:
        kwargs['subfolder'] = subfolder
    try:
        return loader(path, **kwargs)
    except (OSError, ValueError) as err:
        # Offline hub ids surface as OSError/LocalEntryNotFoundError (an OSError).
        raise PretrainedWeightsError(
            f'{what}: could not load {where}: {type(err).__name__}: {str(err)[:300]} '
            f'{_DOWNLOAD_HINT}') from err


def _build(what: str, cls: Any, construct: Callable[[Dict[str, Any]], Any],
           from_pretrained: Optional[str], subfolder: Optional[str],
           from_config: Optional[Dict[str, Any]], **kwargs: Any) -> Any:
    """``construct(from_config)`` or ``cls.from_pretrained``: exactly one source."""
    if (from_pretrained is None) == (from_config is None):
        raise ValueError(f'{what}: give exactly one of from_pretrained=<hub id or folder> '
                         f'or from_config=<architecture dict>.')
    if from_config is not None:
        return construct(dict(from_config))
    return _load_pretrained(cls.from_pretrained, what, from_pretrained, subfolder, **kwargs)


def _finish(module: torch.nn.Module, dtype: Optional[Any]) -> torch.nn.Module:
    """Freeze a component and cast it; trainable parts are added by the model later."""
    module.requires_grad_(False)
    dtype = resolve_dtype(dtype)
    if dtype is not None:
        # Plain nn.Module cast: every weight of these models is safe in half precision
        # (diffusers' own ``to`` would only add a warning about keep-in-fp32 lists).
        nn.Module.to(module, dtype=dtype)
    return module


@MODELS.register_module(name='SDUNet')
def build_unet(from_pretrained: Optional[str] = None, subfolder: Optional[str] = 'unet',
               from_config: Optional[Dict[str, Any]] = None, torch_dtype: Optional[Any] = None,
               **kwargs: Any) -> torch.nn.Module:
    """Build a frozen ``UNet2DConditionModel``.

    Args:
        from_pretrained: hub id or local SD folder.
        subfolder: subfolder holding the UNet (``'unet'``; None for a bare folder).
        from_config: architecture dict (random weights) instead of weights.
        torch_dtype: dtype of the frozen weights (e.g. ``'float16'``).
        **kwargs: forwarded to ``from_pretrained`` (``local_files_only``, ``variant``...).

    Returns:
        The UNet, with ``requires_grad=False`` everywhere.
    """
    from diffusers import UNet2DConditionModel as Cls
    return _finish(_build('UNet', Cls, Cls.from_config, from_pretrained, subfolder, from_config,
                          **kwargs), torch_dtype)


@MODELS.register_module(name='SDVAE')
def build_vae(from_pretrained: Optional[str] = None, subfolder: Optional[str] = 'vae',
              from_config: Optional[Dict[str, Any]] = None, torch_dtype: Optional[Any] = None,
              **kwargs: Any) -> torch.nn.Module:
    """Build a frozen ``AutoencoderKL`` (arguments as :func:`build_unet`).

    Returns:
        The VAE, with ``requires_grad=False`` everywhere.
    """
    from diffusers import AutoencoderKL as Cls
    return _finish(_build('VAE', Cls, Cls.from_config, from_pretrained, subfolder, from_config,
                          **kwargs), torch_dtype)


@MODELS.register_module(name='SDTextEncoder')
def build_text_encoder(from_pretrained: Optional[str] = None,
                       subfolder: Optional[str] = 'text_encoder',
                       from_config: Optional[Dict[str, Any]] = None,
                       torch_dtype: Optional[Any] = None, **kwargs: Any) -> torch.nn.Module:
    """Build a frozen ``CLIPTextModel`` (arguments as :func:`build_unet`).

    Returns:
        The text encoder in eval mode, with ``requires_grad=False``.
    """
    from transformers import CLIPTextConfig, CLIPTextModel as Cls
    model = _build('Text encoder', Cls, lambda cfg: Cls(CLIPTextConfig(**cfg)), from_pretrained,
                   subfolder, from_config, **kwargs)
    return _finish(model.eval(), torch_dtype)


@MODELS.register_module(name='SDTokenizer')
def build_tokenizer(from_pretrained: Optional[str] = None, subfolder: Optional[str] = 'tokenizer',
                    **kwargs: Any) -> Any:
    """Load a ``CLIPTokenizer`` (a vocabulary is data: there is no ``from_config``).

    Args:
        from_pretrained: hub id or local SD folder; tiny configs load the byte-level
            tokenizer shipped in ``configs/tiny_base``.
        subfolder: tokenizer subfolder.
        **kwargs: forwarded to ``from_pretrained``.

    Returns:
        The tokenizer.
    """
    from transformers import CLIPTokenizer
    if from_pretrained is None or 'from_config' in kwargs:
        raise ValueError('Tokenizer: give from_pretrained=<hub id or folder> (tiny configs: '
                         "configs/tiny_base with subfolder='tokenizer').")
    return _load_pretrained(CLIPTokenizer.from_pretrained, 'Tokenizer', from_pretrained,
                            subfolder, **kwargs)


@MODELS.register_module(name='SDScheduler')
def build_scheduler(from_pretrained: Optional[str] = None, subfolder: Optional[str] = 'scheduler',
                    from_config: Optional[Dict[str, Any]] = None, **kwargs: Any) -> Any:
    """Build a ``DDPMScheduler`` (SD's noise schedule; only ``alphas_cumprod`` is used).

    Args:
        from_pretrained: hub id or SD folder; SD's PNDM config loads as DDPM.
        subfolder: scheduler subfolder.
        from_config: scheduler config dict (e.g. ``sd14_scheduler`` of ``configs/_base_/models/sd14_arch.py``).
        **kwargs: forwarded to ``from_pretrained``.

    Returns:
        The scheduler.
    """
    from diffusers import DDPMScheduler as Cls
    return _build('Scheduler', Cls, Cls.from_config, from_pretrained, subfolder, from_config,
                  **kwargs)


@MODELS.register_module(name='SDT2IAdapter')
def build_t2i_adapter(from_pretrained: Optional[str] = None, subfolder: Optional[str] = None,
                      from_config: Optional[Dict[str, Any]] = None,
                      torch_dtype: Optional[Any] = None, **kwargs: Any) -> torch.nn.Module:
    """Build a frozen ``T2IAdapter``.

    Args:
        from_pretrained: hub id (``TencentARC/t2iadapter_color_sd14v1``) or folder.
        subfolder: usually None (adapter repos hold the model at the top level).
        from_config: ``T2IAdapter`` init kwargs.
        torch_dtype: dtype of the weights.
        **kwargs: forwarded to ``from_pretrained``.

    Returns:
        The adapter, frozen.
    """
    from diffusers import T2IAdapter as Cls
    return _finish(_build('T2I-Adapter', Cls, lambda cfg: Cls(**cfg), from_pretrained, subfolder,
                          from_config, **kwargs), torch_dtype)
