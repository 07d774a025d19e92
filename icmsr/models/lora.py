"""Role-switched LoRA on frozen, shared diffusion weights.

ICM-SR runs one frozen SD UNet in three roles: the generator (UNet + LoRA
'generator'), the teacher (no LoRA) and the fake score (UNet + LoRA 'aux').
The frozen weights are kept once; each role only adds its own low-rank branches.

Why not peft's multi-adapter switching: ``set_adapter``/``disable_adapters``
flip ``requires_grad`` of the adapters, so changing the adapter between the
generator's forward and its backward (the teacher and fake-score passes sit
exactly there) silently drops every generator gradient. Here the active role is
a plain flag read at call time; ``requires_grad`` is never touched. The LoRA
parameters are also *owned* by the component that trains them (the generator or
the auxiliary model), not by the shared UNet, so each trainable set lives in one
sub-module: DDP wrappers, optimizers and checkpoints see clean, disjoint sets.

Mechanics: a forward hook on each targeted ``nn.Linear``/``nn.Conv2d`` adds
``scale * up(down(x))`` of the active role's branch. The UNet's own module tree
and state-dict keys stay untouched (``save_pretrained`` still works). A role may
also *override* a layer (e.g. its own trainable copy of ``conv_in``).

Gradient checkpointing recomputes forwards during backward, so the role that was
active in the forward must be active again during backward:
``ICMSR.train_step`` runs the generator's backward inside ``roles.use('generator')``.
"""
import contextlib
import re
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

ALWAYS = '*'  # role key of branches that are active whatever the role


def branch_key(name: str) -> str:
    """The ``ModuleDict`` key of the LoRA branch of a module (``'.'`` is not allowed in keys).

    Args:
        name: e.g. ``"down_blocks.0.attentions.0.proj_in"``.

    Returns:
        e.g. ``'down_blocks__0__attentions__0__proj_in'``.
    """
    return name.replace(".", "__")


def module_name(key: str) -> str:
    """The module name a :func:`branch_key` came from.

    Args:
        key: a branch key.

    Returns:
        The dotted module name.
    """
    return key.replace('__', '.')


class LoRARoles:
    """The shared switch that says which role's LoRA branches are active."""

    def __init__(self) -> None:
        self.active: Optional[str] = None
        self.base_only = False

    @contextlib.contextmanager
    def use(self, role: Optional[str]) -> Iterator[None]:
        """Activate ``role`` (None: frozen base) inside the block, restore after.

        Args:
            role: role name or None.

        Yields:
            Nothing.
        """
        previous, self.active = self.active, role
        try:
            yield
        finally:
            self.active = previous

    @contextlib.contextmanager
    def frozen_base(self) -> Iterator[None]:
        """Run the frozen weights alone inside the block: no branch, not even ``ALWAYS`` ones.

        Yields:
            Nothing.
        """
        previous, self.base_only = self.base_only, True
        try:
            yield
        finally:
            self.base_only = previous


class LoRABranch(nn.Module):
    """Low-rank residual ``scale * up(down(x))`` for a Linear or Conv2d layer.

    ``down`` copies the base layer's geometry (kernel, stride, padding) with
    ``rank`` outputs, ``up`` is a 1x1 map back: the conv LoRA of the LoRA paper
    family. ``down`` is Gaussian with std ``1/rank``, ``up`` starts at zero, so a
    fresh branch leaves the model's output unchanged.

    Args:
        base: the frozen layer it adapts.
        rank: LoRA rank r.
        alpha: scale numerator; the branch is multiplied by ``alpha / rank``.
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float) -> None:
        super().__init__()
        if isinstance(base, nn.Linear):
            self.down: nn.Module = nn.Linear(base.in_features, rank, bias=False)
            self.up: nn.Module = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d):
            if base.groups != 1:
                raise ValueError('LoRA on grouped convolutions is not supported.')
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride,
                                  base.padding, base.dilation, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            raise TypeError(f'LoRA targets must be nn.Linear or nn.Conv2d, got {type(base)}')
        self.scale = alpha / rank
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the low-rank residual for input ``x`` (same dtype as the branch)."""
        return self.up(self.down(x)) * self.scale


def _hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: apply the active role's override and/or LoRA branch."""
    if module._icmsr_roles.base_only:
        return output
    role = module._icmsr_roles.active
    override = module._icmsr_overrides.get(role)
    if override is not None:
        weight = next(override.parameters())
        output = override(args[0].to(weight.dtype)).to(output.dtype)
    for key in (ALWAYS, role):
        branch = module._icmsr_branches.get(key)
        if branch is not None:
            x = args[0]
            dtype = branch.up.weight.dtype
            output = output + branch(x.to(dtype)).to(output.dtype)
    return output


def _prepare(module: nn.Module, roles: LoRARoles) -> None:
    """Attach the hook and the (unregistered) role tables to a layer once."""
    if getattr(module, '_icmsr_roles', None) is None:
        # Plain attributes, not sub-modules: the branches belong to their trainer.
        object.__setattr__(module, '_icmsr_roles', roles)
        object.__setattr__(module, '_icmsr_branches', {})
        object.__setattr__(module, '_icmsr_overrides', {})
        module.register_forward_hook(_hook)
    elif module._icmsr_roles is not roles:
        raise ValueError('A layer cannot be switched by two different LoRARoles.')


def match_targets(model: nn.Module, targets: Union[str, Sequence[str]]) -> List[str]:
    """Names of the Linear/Conv2d sub-modules of ``model`` selected by ``targets``.

    Args:
        model: the model to search.
        targets: a regex string (full match on the module's full name), or a
            list of names where each entry matches a module whose full name equals
            it or ends with ``'.' + entry`` (so ``'conv'`` hits ``...downsamplers.0.conv``
            but not ``...conv1``).

    Returns:
        Sorted module names.
    """
    names = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Conv2d)) or not name:
            continue
        if isinstance(targets, str):
            hit = re.fullmatch(targets, name) is not None
        else:
            hit = any(name == t or name.endswith('.' + t) for t in targets)
        if hit:
            names.append(name)
    return sorted(names)


def inject_lora(model: nn.Module, roles: LoRARoles, role: str,
                targets: Union[str, Sequence[str]], rank: int = 4,
                alpha: Optional[float] = None) -> nn.ModuleDict:
    """Add LoRA branches for ``role`` to the targeted layers of a frozen model.

    Args:
        model: frozen model (its weights stay untouched).
        roles: the switch shared by every role of this model.
        role: role name, or :data:`ALWAYS` for branches active in every role.
        targets: see :func:`match_targets`.
        rank: LoRA rank.
        alpha: LoRA alpha (default: ``rank``, i.e. scale 1).

    Returns:
        A ``ModuleDict`` of the new branches (keys: :func:`branch_key` of the module names)
        for the caller to own and train.
    """
    names = match_targets(model, targets)
    if not names:
        raise ValueError(f'LoRA targets {targets!r} match no Linear/Conv2d layer.')
    modules = dict(model.named_modules())
    param = next(model.parameters())
    branches = nn.ModuleDict()
    for name in names:
        layer = modules[name]
        _prepare(layer, roles)
        if role in layer._icmsr_branches:
            raise ValueError(f'Layer {name} already has a LoRA branch for role {role!r}.')
        branch = LoRABranch(layer, rank, rank if alpha is None else alpha)
        branch.to(device=param.device)
        layer._icmsr_branches[role] = branch
        branches[branch_key(name)] = branch
    return branches


def override_layer(layer: nn.Module, roles: LoRARoles, role: str,
                   replacement: nn.Module) -> None:
    """Make ``layer`` run ``replacement`` instead of itself while ``role`` is active.

    Args:
        layer: the frozen layer (e.g. ``unet.conv_in``).
        roles: the shared switch.
        role: the role that uses the replacement.
        replacement: the module to run (owned by the caller).
    """
    _prepare(layer, roles)
    layer._icmsr_overrides[role] = replacement


def lora_branch_count(model: nn.Module) -> Dict[str, int]:
    """Count LoRA branches per role in ``model`` (for logs and tests).

    Args:
        model: a model processed by :func:`inject_lora`.

    Returns:
        ``{role: number of layers with a branch}``.
    """
    counts: Dict[str, int] = {}
    for mod in model.modules():
        for role in getattr(mod, '_icmsr_branches', {}):
            counts[role] = counts.get(role, 0) + 1
    return counts

