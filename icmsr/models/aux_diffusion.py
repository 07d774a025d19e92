"""The auxiliary (fake-score) diffusion model eps_psi and its loss (Eq. 10)."""
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from icmsr.registry import MODELS, build_or_use
from .diffusion import AUX_ROLE, add_noise, sample_noise, sample_timesteps, seeded_rng
from .generator import UNET_LORA_TARGETS
from .lora import LoRARoles, inject_lora


@MODELS.register_module()
class AuxDiffusion(nn.Module):
    """LoRA 'aux' on the (shared) SD UNet, trained to denoise the generator's latents.

    ``L_aux = mse(eps_psi(z_t', t', c_t), eps)`` with ``z_t'`` made from the
    *detached* generator latents, a fresh ``eps`` and ``t' ~ U[0, 1000)`` (OSEDiff
    draws them independently of the regularizer's). By default the adapter
    features are NOT given (paper Table 5, "no adapter", the reported model);
    ``use_adapter=True`` gives them (Table 5's other row).

    The LoRA parameters are registered here (not in the shared UNet), so this
    module owns exactly the parameters its own optimizer steps.

    Args:
        unet: shared UNet module (plain reference) or config (owned).
        scheduler: ``DDPMScheduler`` or config.
        roles: the shared UNet's LoRA role switch.
        lora_rank: LoRA rank.
        lora_alpha: LoRA alpha (peft's default 8, as OSEDiff).
        lora_targets: target names (suffix match) or a regex.
        use_adapter: feed adapter features to the UNet in the aux loss.
        t_range: ``(min, max)`` of t', max exclusive.
        seed: seed of a private RNG for t' and eps (None: global RNG).
    """

    def __init__(self, unet: Any, scheduler: Any, roles: Optional[LoRARoles] = None,
                 lora_rank: int = 4, lora_alpha: Optional[float] = 8,
                 lora_targets: Union[str, Sequence[str]] = UNET_LORA_TARGETS,
                 use_adapter: bool = False, t_range: Tuple[int, int] = (0, 1000),
                 seed: Optional[int] = None) -> None:
        super().__init__()
        if isinstance(unet, dict):
            self.unet = build_or_use(unet)
            self.unet.requires_grad_(False)
        else:
            object.__setattr__(self, 'unet', unet)
        self.scheduler = build_or_use(scheduler)
        self.roles = roles if roles is not None else LoRARoles()
        self.lora = inject_lora(self.unet, self.roles, AUX_ROLE, lora_targets, lora_rank,
                                lora_alpha)
        self.use_adapter = use_adapter
        self.t_range = (int(t_range[0]), int(t_range[1]))
        self._rng = seeded_rng(seed)

    def trainable_parameters(self) -> List[nn.Parameter]:
        """The aux LoRA parameters."""
        return list(self.lora.parameters())

    def forward(self, z0: torch.Tensor, prompt_embeds: torch.Tensor,
                feats: Optional[List[torch.Tensor]] = None,
                timesteps: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The denoising loss on detached generator latents.

        Args:
            z0: generator latents (detached here).
            prompt_embeds: text embeddings.
            feats: adapter features; used only when ``use_adapter``.
            timesteps: override the t' draw (tests).
            noise: override the eps draw (tests).

        Returns:
            Scalar MSE loss (mean over all elements).
        """
        z0 = z0.detach().float()
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
