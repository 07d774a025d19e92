"""Role-switched LoRA on frozen, shared diffusion weights: the one owner of the roles.

ICM-SR runs one frozen SD UNet in three roles: the generator (UNet + LoRA
'generator'), the teacher (no LoRA) and the fake score (UNet + LoRA 'aux').
The frozen weights are kept once; each role only adds its own low-rank branches.
:class:`LoRARoles` is the whole mechanism: it attaches branches and overrides,
switches the active role, folds branches into the weights and counts them.

Why not peft's multi-adapter switching: ``set_adapter``/``disable_adapters``
flip ``requires_grad`` of the adapters, so changing the adapter between the
generator's forward and its backward (the teacher and fake-score passes sit
exactly there) silently drops every generator gradient. Here the active role is
a plain flag read at call time; ``requires_grad`` is never touched. The LoRA
parameters are also *owned* by the component that trains them (the generator or
the auxiliary model), not by the shared UNet, so each trainable set lives in one
sub-module: DDP wrappers, optimizers and checkpoints see clean, disjoint sets.

Mechanics: a forward hook on each targeted ``nn.Linear``/``nn.Conv2d`` adds
``scale * up(down(x))`` of the active role's branch. The role tables live in the
hook object, not on the layer, so the UNet's module tree and state-dict keys stay
untouched (``save_pretrained`` still works). A role may also *override* a layer
(e.g. its own trainable copy of ``conv_in``).

Gradient checkpointing recomputes forwards during backward, so the role that was
active in the forward must be active again during backward:
``ICMSR.train_step`` runs each backward inside ``roles.use(role)``.
"""
import contextlib
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from icmsr.registry import build_or_use

ALWAYS = '*'  # role key of branches that are active whatever the role
Targets = Union[str, Sequence[str]]


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


def own_or_share(owner: nn.Module, name: str, spec: Any) -> nn.Module:
    """Give ``owner`` the attribute ``name``: owned when built here, shared otherwise.

    A config is built and registered as a sub-module (moved, saved and wrapped
    with ``owner``). A module is kept as a plain reference, outside the module tree:
    its owner (e.g. ``OneStepSR`` for the one frozen UNet) moves and saves it, so
    it is never counted, saved or wrapped twice.

    Args:
        owner: the module that uses it.
        name: attribute name.
        spec: a config dict or a module owned elsewhere.

    Returns:
        The module.
    """
    if isinstance(spec, dict):
        setattr(owner, name, build_or_use(spec))
    else:
        object.__setattr__(owner, name, spec)
    return getattr(owner, name)


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

    def delta_weight(self, base: nn.Module) -> torch.Tensor:
        """The weight increment equivalent to this branch on ``base``, in float32.

        Both maps are linear with the base layer's geometry (``up`` is 1x1), so the
        sum ``base(x) + branch(x)`` is one layer with weight ``W + scale * up @ down``.

        Args:
            base: the layer it adapts (``nn.Linear`` or ``nn.Conv2d``).

        Returns:
            A tensor shaped like ``base.weight``.
        """
        down, up = self.down.weight.float(), self.up.weight.float()
        if isinstance(base, nn.Linear):
            delta = up @ down
        elif isinstance(base, nn.Conv2d):
            delta = torch.einsum('or,rikl->oikl', up[:, :, 0, 0], down)
        else:
            raise TypeError(f'Cannot fuse LoRA into {type(base).__name__}.')
        return delta * self.scale


class _LayerSwitch:
    """The forward hook of one adapted layer, with its branches and overrides per role."""

    def __init__(self, roles: 'LoRARoles') -> None:
        self.roles = roles
        self.branches: Dict[str, LoRABranch] = {}
        self.overrides: Dict[str, nn.Module] = {}

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Apply the active role's override, then the ``ALWAYS`` and the role's branch."""
        if self.roles.base_only:
            return output
        role = self.roles.active
        override = self.overrides.get(role)
        if override is not None:
            weight = next(override.parameters())
            output = override(args[0].to(weight.dtype)).to(output.dtype)
        for key in (ALWAYS, role):
            branch = self.branches.get(key)
            if branch is not None:
                dtype = branch.up.weight.dtype
                output = output + branch(args[0].to(dtype)).to(output.dtype)
        return output


def match_targets(model: nn.Module, targets: Targets) -> List[str]:
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


class LoRARoles:
    """The switch of a frozen model's LoRA roles: attach, switch, fuse and count.

    One instance serves every role of one frozen model (``OneStepSR`` makes it
    and hands it to each component). The branches it attaches are returned to the
    caller, who owns and trains them.
    """

    def __init__(self) -> None:
        self.active: Optional[str] = None
        self.base_only = False
        self._switches: Dict[nn.Module, _LayerSwitch] = {}  # keyed by layer identity

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

    def _switch(self, layer: nn.Module) -> _LayerSwitch:
        """The layer's switch, hooked onto it the first time."""
        switch = self._switches.get(layer)
        if switch is None:
            switch = self._switches[layer] = _LayerSwitch(self)
            layer.register_forward_hook(switch)
        return switch

    def attach(self, model: nn.Module, role: str, targets: Targets, rank: int = 4,
               alpha: Optional[float] = None) -> nn.ModuleDict:
        """Add LoRA branches for ``role`` to the targeted layers of a frozen model.

        Args:
            model: frozen model (its weights stay untouched).
            role: role name, or :data:`ALWAYS` for branches active in every role.
            targets: see :func:`match_targets`.
            rank: LoRA rank.
            alpha: LoRA alpha (default: ``rank``, i.e. scale 1).

        Returns:
            A ``ModuleDict`` of the new branches (keys: :func:`branch_key` of the module
            names) for the caller to own and train.
        """
        names = match_targets(model, targets)
        if not names:
            raise ValueError(f'LoRA targets {targets!r} match no Linear/Conv2d layer.')
        device = next(model.parameters()).device
        branches = nn.ModuleDict()
        for name in names:
            layer = model.get_submodule(name)
            switch = self._switch(layer)
            if role in switch.branches:
                raise ValueError(f'Layer {name} already has a LoRA branch for role {role!r}.')
            branch = LoRABranch(layer, rank, rank if alpha is None else alpha).to(device=device)
            switch.branches[role] = branch
            branches[branch_key(name)] = branch
        return branches

    def override(self, layer: nn.Module, role: str,
                 replacement: Optional[nn.Module]) -> Optional[nn.Module]:
        """Make ``layer`` run ``replacement`` instead of itself while ``role`` is active.

        Args:
            layer: the frozen layer (e.g. ``unet.conv_in``).
            role: the role that uses the replacement.
            replacement: the module to run (owned by the caller); None removes the override.

        Returns:
            The override it replaces, or None.
        """
        overrides = self._switch(layer).overrides
        previous = overrides.pop(role, None)
        if replacement is not None:
            overrides[role] = replacement
        return previous

    def fuse(self, model: nn.Module, branches: nn.ModuleDict, role: str) -> int:
        """Fold ``role``'s branches into the frozen weights of ``model`` and detach them.

        The output is unchanged up to rounding; two extra matmuls/convs per adapted
        layer disappear. Every role sharing these weights sees the change.

        Args:
            model: the model :meth:`attach` adapted.
            branches: what :meth:`attach` returned (or a subset).
            role: their role.

        Returns:
            The number of fused layers.

        Raises:
            RuntimeError: a branch is not attached (fused already).
        """
        for key, branch in branches.items():
            layer = model.get_submodule(module_name(key))
            switch = self._switches.get(layer)
            if switch is None or switch.branches.get(role) is not branch:
                raise RuntimeError(f'LoRA branch {key} is not attached to its layer for role '
                                   f'{role!r} (already fused?).')
            with torch.no_grad():
                layer.weight.add_(branch.delta_weight(layer).to(layer.weight.device,
                                                                layer.weight.dtype))
            del switch.branches[role]
        return len(branches)

    def count(self, model: nn.Module) -> Dict[str, int]:
        """Count the attached LoRA branches per role in ``model`` (for logs and checks).

        Args:
            model: a model :meth:`attach` adapted.

        Returns:
            ``{role: number of layers with a branch}``.
        """
        counts: Dict[str, int] = {}
        for mod in model.modules():
            switch = self._switches.get(mod)
            for role in (switch.branches if switch is not None else ()):
                counts[role] = counts.get(role, 0) + 1
        return counts
