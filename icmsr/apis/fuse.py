"""Fuse the generator's LoRA branches into the frozen base weights for inference.

A LoRA branch adds ``scale * up(down(x))`` to a layer's output. Both maps are
linear with the base layer's geometry (``down`` copies the kernel, stride and
padding; ``up`` is 1x1), so the sum is one layer with weight
``W + scale * up @ down``. Folding it in removes two extra matmuls/convs per
adapted layer at every call. The generator's private ``conv_in`` copy (when
trained) is copied over the UNet's ``conv_in`` the same way.

Only fuse a generator that owns its UNet and VAE (as built by
:func:`icmsr.apis.init_model`): fused weights would change the teacher and the
fake-score model if the UNet were shared with them.
"""
from typing import Dict

import torch
import torch.nn as nn

from icmsr.models.diffusion import GENERATOR_ROLE
from icmsr.models.lora import ALWAYS, LoRABranch, lora_branch_count, module_name


def lora_delta_weight(branch: LoRABranch, base: nn.Module) -> torch.Tensor:
    """The weight increment equivalent to ``branch`` on ``base``, in float32.

    Args:
        branch: A LoRA branch (``down``, ``up``, ``scale``).
        base: The layer it adapts (``nn.Linear`` or ``nn.Conv2d``).

    Returns:
        A tensor shaped like ``base.weight``.
    """
    down, up = branch.down.weight.float(), branch.up.weight.float()
    if isinstance(base, nn.Linear):
        delta = up @ down
    elif isinstance(base, nn.Conv2d):
        delta = torch.einsum('or,rikl->oikl', up[:, :, 0, 0], down)
    else:
        raise TypeError(f'Cannot fuse LoRA into {type(base).__name__}.')
    return delta * branch.scale


def _fuse_branches(model: nn.Module, branches: nn.ModuleDict, role: str) -> int:
    """Fold every branch of ``branches`` (keys: ``lora.branch_key`` of module names) into ``model``."""
    count = 0
    for key, branch in branches.items():
        layer = model.get_submodule(module_name(key))
        if layer._icmsr_branches.get(role) is not branch:
            raise RuntimeError(f'LoRA branch {key} is not attached to its layer for role {role!r} '
                               '(already fused?).')
        with torch.no_grad():
            layer.weight.add_(lora_delta_weight(branch, layer).to(layer.weight.device, layer.weight.dtype))
        del layer._icmsr_branches[role]
        count += 1
    return count


def fuse_generator_lora(generator: nn.Module) -> Dict[str, int]:
    """Fold the LoRA of the VAE encoder and the UNet, and the trained ``conv_in``, into the base.

    After fusing, the generator's outputs are unchanged (up to rounding) and its
    LoRA branches are detached (they stay in ``generator.unet_lora`` /
    ``vae_lora`` only as a record). Export LoRA files before fusing.

    Args:
        generator: An ``OneStepGenerator`` that owns its UNet (no other role's LoRA on it).

    Returns:
        Number of fused layers per part: ``{'unet': n, 'vae': m, 'conv_in': 0|1}``.

    Raises:
        RuntimeError: The UNet carries LoRA of other roles (shared with a
            teacher/fake score), or the generator was fused already.
    """
    if getattr(generator, 'lora_fused', False):
        raise RuntimeError('This generator is already fused.')
    other = set(lora_branch_count(generator.unet)) - {GENERATOR_ROLE, ALWAYS}
    if other:
        raise RuntimeError(
            f'The UNet also carries LoRA of roles {sorted(other)} (it is shared with the training '
            'model); fusing would change them. Build an inference model with icmsr.apis.init_model.')
    counts = dict(unet=_fuse_branches(generator.unet, generator.unet_lora, GENERATOR_ROLE),
                  vae=_fuse_branches(generator.vae, generator.vae_lora, ALWAYS), conv_in=0)
    if generator.conv_in is not None:
        target = generator.unet.conv_in
        with torch.no_grad():
            target.weight.copy_(generator.conv_in.weight)
            if target.bias is not None:
                target.bias.copy_(generator.conv_in.bias)
        target._icmsr_overrides.pop(GENERATOR_ROLE, None)
        counts['conv_in'] = 1
    generator.lora_fused = True
    return counts
