"""Fingerprints of the frozen base a LoRA was trained on.

A checkpoint or an export holds only the trained tensors (LoRA, ``conv_in``);
the frozen UNet, VAE and text encoder come from the config. Loaded onto another
base - other pretrained weights, or random weights drawn from another seed - the
LoRA runs without any error and produces garbage. So every checkpoint and export
records where its base came from and a digest of a few of its frozen tensors,
and loading compares the digests.

The digest hashes the first, middle and last parameter of each component after
rounding to bfloat16, so the same weights loaded in float32 or bfloat16 give the
same fingerprint. Weights loaded directly in float16 round differently; load in
float32 and cast afterwards (``icmsr.apis.init_model`` and the pipeline do).
"""
import hashlib
import json
import warnings
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn as nn

BASE_CHECKS = ('error', 'warn')


class BaseMismatchError(RuntimeError):
    """Trained weights were about to be loaded onto another frozen base."""


def describe_source(cfg: Any, base_seed: Optional[int]) -> str:
    """Where a component's weights come from, for messages.

    Args:
        cfg: its config dict (``from_pretrained``/``subfolder``/``revision`` or ``from_config``),
            or an already built module.
        base_seed: the seed random weights were drawn with.

    Returns:
        e.g. ``'CompVis/stable-diffusion-v1-4/unet@main'`` or ``'random (base_seed=0)'``.
    """
    if not isinstance(cfg, Mapping):
        return f'a prebuilt {type(cfg).__name__}'
    if cfg.get('from_pretrained'):
        where = str(cfg['from_pretrained'])
        if cfg.get('subfolder'):
            where += '/' + str(cfg['subfolder'])
        return where + (f"@{cfg['revision']}" if cfg.get('revision') else '')
    return f'random (base_seed={base_seed})'


def tensor_digest(module: nn.Module) -> str:
    """sha256 (16 hex digits) of three of ``module``'s parameters, rounded to bfloat16.

    Args:
        module: a frozen component.

    Returns:
        The digest.
    """
    params = [p for p in module.parameters()]
    if not params:
        return 'no-parameters'
    picks = sorted({0, len(params) // 2, len(params) - 1})
    h = hashlib.sha256()
    for i in picks:
        data = params[i].detach().to('cpu', torch.bfloat16).contiguous().view(torch.int16)
        h.update(str(tuple(data.shape)).encode())
        h.update(data.numpy().tobytes())
    return h.hexdigest()[:16]


def base_fingerprint(components: Mapping[str, nn.Module],
                     sources: Mapping[str, str]) -> Dict[str, Dict[str, str]]:
    """``{name: {'source': ..., 'digest': ...}}`` of the frozen components.

    Args:
        components: e.g. ``{'unet': ..., 'vae': ..., 'text_encoder': ...}``.
        sources: :func:`describe_source` of each.

    Returns:
        The fingerprint (plain strings: safe for ``weights_only`` loading and JSON).
    """
    return {name: dict(source=str(sources.get(name, '?')), digest=tensor_digest(module))
            for name, module in components.items()}


def fingerprint_to_tensor(fingerprint: Mapping[str, Any]) -> torch.Tensor:
    """The fingerprint as a uint8 tensor (JSON bytes).

    State dicts hold tensors only: MMEngine broadcasts every entry when it
    initialises a distributed model, and ``weights_only`` loading keeps them safe.

    Args:
        fingerprint: from :func:`base_fingerprint`.

    Returns:
        A 1-D uint8 tensor.
    """
    data = json.dumps(fingerprint, sort_keys=True).encode('utf-8')
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def fingerprint_from_state(value: Any) -> Optional[Dict[str, Any]]:
    """Read a fingerprint stored by :func:`fingerprint_to_tensor` (None if there is none).

    Args:
        value: the ``_extra_state`` entry of a state dict.

    Returns:
        The fingerprint dict, or None.
    """
    if isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1:
        return json.loads(bytes(value.cpu().tolist()).decode('utf-8'))
    if isinstance(value, Mapping):
        return dict(value.get('base_fingerprint') or {}) or None
    return None


def check_fingerprint(saved: Optional[Mapping[str, Any]], current: Mapping[str, Any], where: str,
                      on_mismatch: str = 'error') -> None:
    """Compare a saved fingerprint with the base the model was built on.

    Args:
        saved: the fingerprint stored with the trained weights (None: an old file without one).
        current: the model's own fingerprint.
        where: the file or folder, for the message.
        on_mismatch: ``'error'`` (default) or ``'warn'`` (a deliberate transfer).

    Raises:
        BaseMismatchError: when a digest differs and ``on_mismatch='error'``.
    """
    if on_mismatch not in BASE_CHECKS:
        raise ValueError(f'base_check must be one of {BASE_CHECKS}, got {on_mismatch!r}.')
    if not saved:
        warnings.warn(f'{where} records no base fingerprint: cannot check that its frozen base '
                      'matches this config.', stacklevel=2)
        return
    differ = [name for name in current
              if name in saved and saved[name].get('digest') != current[name].get('digest')]
    if not differ:
        return
    lines = [f'  {name}: trained on {saved[name].get("source")} [{saved[name].get("digest")}], '
             f'now {current[name].get("source")} [{current[name].get("digest")}]' for name in differ]
    message = (f'{where} was trained on another frozen base than this config builds:\n'
               + '\n'.join(lines) + '\nUse the config (and base_seed) it was trained with. To '
               'transfer the LoRA on purpose, pass --allow-base-mismatch (tools) or '
               "base_check='warn' (model config / Python API).")
    if on_mismatch == 'warn':
        warnings.warn(message, stacklevel=2)
        return
    raise BaseMismatchError(message)
