"""The auxiliary (fake-score) diffusion model eps_psi and its loss (Eq. 10)."""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from icmsr.registry import MODELS, build_or_use
from .diffusion import AUX_ROLE, add_noise, sample_noise, sample_timesteps, seeded_rng
from .generator import UNET_LORA_TARGETS
from .lora import LoRARoles, own_or_share

# OSEDiff's rule (``initialize_unet``): every non-norm weight whose name contains one
# of its patterns, conv_in included. As suffix matches on SD's UNet this is the
# generator's list plus conv_in (tests derive the rule's list from the module names).
AUX_LORA_TARGETS = tuple(UNET_LORA_TARGETS) + ('conv_in', )
_MID_BLOCK_TARGETS = (r'mid_block\.(.*\.)?(to_k|to_q|to_v|to_out\.0|conv|conv1|conv2|conv_shortcut'
                      r'|proj_in|proj_out|ff\.net\.2|ff\.net\.0\.proj)')
#: Named LoRA target sets of the fake score.
AUX_LORA_PRESETS: Dict[str, Union[str, Tuple[str, ...]]] = {
    # What OSEDiff's rule selects: down blocks + conv_in, up blocks + conv_out, mid block.
    'osediff': AUX_LORA_TARGETS,
    # What OSEDiff's code trains: its three add_adapter calls leave only the last adapter
    # (the mid block) active on the fake-score UNet, so only those layers act and learn.
    'osediff_effective': _MID_BLOCK_TARGETS,
    # The generator's targets, without conv_in.
    'generator': tuple(UNET_LORA_TARGETS),
}
NOISE_SOURCES = ('own', 'regularizer')


@MODELS.register_module()
class AuxDiffusion(nn.Module):
    """LoRA 'aux' on the (shared) SD UNet, trained to denoise the generator's latents.

    ``L_aux = mse(eps_psi(z_t', t', c_t), eps)`` with ``z_t'`` made from the
    *detached* generator latents. ``noise_source='own'`` (default, OSEDiff's
    ``diff_loss``) draws a fresh ``eps`` and ``t' ~ U[t_range)``;
    ``noise_source='regularizer'`` reuses the regularizer's ``t``, ``eps`` and
    ``z_t`` (Algorithm 1, lines 16-17: the same ``sg(z_t)`` as ``L_Reg``), passed as
    ``reg_info``. By default the adapter features are NOT given (paper Table 5,
    "no adapter", the reported model); ``use_adapter=True`` gives them.

    LoRA targets: ``lora_preset`` names a set of :data:`AUX_LORA_PRESETS`
    (``'osediff'``: OSEDiff's selection rule, conv_in included; ``'osediff_effective'``:
    the mid block only, what OSEDiff's code effectively trains); ``lora_targets``
    overrides it with explicit names or a regex.

    The LoRA parameters are registered here (not in the shared UNet), so this
    module owns exactly the parameters its own optimizer steps.

    Args:
        unet: shared UNet module (plain reference) or config (owned).
        scheduler: ``DDPMScheduler`` or config.
        roles: the shared UNet's LoRA role switch.
        lora_rank: LoRA rank.
        lora_alpha: LoRA alpha (peft's default 8, as OSEDiff).
        lora_preset: name in :data:`AUX_LORA_PRESETS` (default ``'osediff'``).
        lora_targets: explicit target names (suffix match) or a regex; overrides the preset.
        use_adapter: feed adapter features to the UNet in the aux loss.
        t_range: ``(min, max)`` of t', max exclusive (``noise_source='own'``).
        noise_source: ``'own'`` or ``'regularizer'``.
        seed: seed of a private RNG for t' and eps (None: global RNG).
    """

    def __init__(self, unet: Any, scheduler: Any, roles: LoRARoles,
                 lora_rank: int = 4, lora_alpha: Optional[float] = 8,
                 lora_preset: str = 'osediff',
                 lora_targets: Optional[Union[str, Sequence[str]]] = None,
                 use_adapter: bool = False, t_range: Tuple[int, int] = (0, 1000),
                 noise_source: str = 'own', seed: Optional[int] = None) -> None:
        super().__init__()
        if lora_preset not in AUX_LORA_PRESETS:
            raise ValueError(f'AuxDiffusion lora_preset must be one of '
                             f'{sorted(AUX_LORA_PRESETS)}, got {lora_preset!r}.')
        if noise_source not in NOISE_SOURCES:
            raise ValueError(f'AuxDiffusion noise_source must be one of {NOISE_SOURCES}, '
                             f'got {noise_source!r}.')
        own_or_share(self, 'unet', unet).requires_grad_(False)
        self.scheduler = build_or_use(scheduler)
        self.roles = roles
        self.lora_preset = lora_preset
        targets = AUX_LORA_PRESETS[lora_preset] if lora_targets is None else lora_targets
        self.lora = roles.attach(self.unet, AUX_ROLE, targets, lora_rank, lora_alpha)
        self.use_adapter = use_adapter
        self.noise_source = noise_source
        self.t_range = (int(t_range[0]), int(t_range[1]))
        self._rng = seeded_rng(seed)

    def trainable_parameters(self) -> List[nn.Parameter]:
        """The aux LoRA parameters."""
        return list(self.lora.parameters())

    def forward(self, z0: torch.Tensor, prompt_embeds: torch.Tensor,
                feats: Optional[List[torch.Tensor]] = None,
                timesteps: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None,
                reg_info: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
        """The denoising loss on detached generator latents.

        Args:
            z0: generator latents (detached here).
            prompt_embeds: text embeddings.
            feats: adapter features; used only when ``use_adapter``.
            timesteps: override the t' draw (tests; ``noise_source='own'``).
            noise: override the eps draw (tests; ``noise_source='own'``).
            reg_info: the info dict the regularizer returned this iteration (keys
                ``timesteps``, ``noise``, ``z_t``); required by
                ``noise_source='regularizer'``, ignored otherwise.

        Returns:
            Scalar MSE loss (mean over all elements).
        """
        z0 = z0.detach().float()
        if self.noise_source == 'regularizer':
            timesteps, noise, z_t = self._reused(z0, reg_info)
        else:
            if timesteps is None:
                timesteps = sample_timesteps(*self.t_range, z0.shape[0], z0.device, self._rng)
            if noise is None:
                noise = sample_noise(z0, self._rng)
            z_t = add_noise(self.scheduler, z0, noise, timesteps)
        dtype = self.unet.dtype
        residuals = None
        if self.use_adapter and feats is not None:
            residuals = [f.detach().to(dtype) for f in feats]  # fresh list: the UNet pops
        with self.roles.use(AUX_ROLE):
            eps = self.unet(z_t.to(dtype), timesteps,
                            encoder_hidden_states=prompt_embeds.detach().to(dtype),
                            down_intrablock_additional_residuals=residuals).sample
        return F.mse_loss(eps.float(), noise)

    @staticmethod
    def _reused(z0: torch.Tensor, reg_info: Optional[Mapping[str, Any]]
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The regularizer's ``(t, eps, z_t)``, detached (Algorithm 1, lines 16-17)."""
        missing = [k for k in ('timesteps', 'noise', 'z_t') if k not in (reg_info or {})]
        if missing:
            raise ValueError(
                "AuxDiffusion(noise_source='regularizer') needs the regularizer's info dict: "
                'call aux_diffusion(z0.detach(), embeds, feats, reg_info=info) with '
                f'`_, info = regularizer(...)` of the same iteration (missing {missing}).')
        z_t = reg_info['z_t'].detach()
        if z_t.shape != z0.shape:
            raise ValueError(f'reg_info z_t has shape {tuple(z_t.shape)}, the latents '
                             f'{tuple(z0.shape)}: pass the info of this batch.')
        return reg_info['timesteps'].detach(), reg_info['noise'].detach().float(), z_t
