"""ICM regularization: VSD against a T2I-Adapter-conditioned teacher (Eq. 6-7)."""
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from icmsr.registry import MODELS, build_or_use
from .diffusion import (AUX_ROLE, TEACHER_ROLE, add_noise, cfg_combine, sample_noise,
                        sample_timesteps, seeded_rng, x0_from_eps)
from .lora import LoRARoles, own_or_share

Features = Optional[List[torch.Tensor]]


@MODELS.register_module()
class VSDRegularizer(nn.Module):
    """The regularization loss L_Reg of ICM-SR (OSEDiff's VSD when no adapter).

    One call draws ``t ~ U[t_min, t_max)`` and ``eps ~ N(0, I)``, forms
    ``z_t = a_t z0 + b_t eps``, and (without gradients) asks

    * the teacher (frozen UNet, no LoRA) with the T2I-Adapter features of ``F_c``
      (computed by the model's :class:`~icmsr.models.teacher_condition.TeacherCondition`)
      and classifier-free guidance against the negative prompt (the adapter
      features go to both CFG branches, as diffusers' adapter pipeline does), and
    * the fake score (UNet + 'aux' LoRA), with the adapter features unless
      ``fake_uses_adapter=False`` (Algorithm 1 line 12 gives them).

    x0 form (OSEDiff, default): ``g = (x0_fake - x0_real) / mean|z0 - x0_real|``
    (per sample, mean over C, H, W); ``loss = mse(z0, stopgrad(z0 - g))`` with
    mean reduction, so ``dL/dz0 = 2 g / numel(z0)`` - OSEDiff's weighting.
    eps form: ``g = w(t) (eps_real - eps_fake)``, Eq. 3's sign, with
    ``w(t) = 1`` (``'uniform'``) or ``1 - abar_t`` (``'sigma2'``).

    Sign: a gradient-descent step moves z0 along ``x0_real - x0_fake``, i.e.
    towards the teacher's estimate. The paper's Algorithm 1 (line 14) and Eq. 9
    print ``eps_fake - eps_real`` as the gradient, which would push away from the
    teacher; Eq. 3 and OSEDiff's code have the sign used here.

    Args:
        teacher_unet: the teacher's UNet (module, shared; or config, then owned here).
        scheduler: ``DDPMScheduler`` or config.
        roles: LoRA role switch of the shared UNet.
        fake_unet: UNet of the fake score (default: ``teacher_unet``, i.e. shared).
        cfg_scale: teacher guidance scale.
        t_range: ``(t_min, t_max)`` of the timestep draw, max exclusive.
        fake_uses_adapter: give the adapter features to the fake score too.
        grad_form: ``'x0'`` (OSEDiff) or ``'eps'``.
        eps_weighting: ``'uniform'`` or ``'sigma2'``, for ``grad_form='eps'``.
        seed: seed of a private RNG for t and eps (None: torch's global RNG, which
            MMEngine seeds per rank).
    """

    def __init__(self, teacher_unet: Any, scheduler: Any, roles: LoRARoles,
                 fake_unet: Any = None, cfg_scale: float = 7.5,
                 t_range: Tuple[int, int] = (20, 980), fake_uses_adapter: bool = True,
                 grad_form: str = 'x0', eps_weighting: str = 'uniform',
                 seed: Optional[int] = None) -> None:
        super().__init__()
        if grad_form not in ('x0', 'eps'):
            raise ValueError(f"VSDRegularizer grad_form must be 'x0' or 'eps', got {grad_form!r}")
        if eps_weighting not in ('uniform', 'sigma2'):
            raise ValueError(f"eps_weighting must be 'uniform' or 'sigma2', got {eps_weighting!r}")
        own_or_share(self, 'teacher_unet', teacher_unet)
        own_or_share(self, 'fake_unet', self.teacher_unet if fake_unet is None else fake_unet)
        self.scheduler = build_or_use(scheduler)
        self.roles = roles
        self.cfg_scale = float(cfg_scale)
        self.t_range = (int(t_range[0]), int(t_range[1]))
        self.fake_uses_adapter = fake_uses_adapter
        self.grad_form, self.eps_weighting = grad_form, eps_weighting
        self._rng = seeded_rng(seed)

    def _unet_eps(self, unet: nn.Module, z_t: torch.Tensor, t: torch.Tensor,
                  embeds: torch.Tensor, feats: Features) -> torch.Tensor:
        dtype = unet.dtype
        # The UNet pops from the residual list: give it a fresh list every call.
        residuals = None if feats is None else [f.to(dtype) for f in feats]
        return unet(z_t.to(dtype), t, encoder_hidden_states=embeds.to(dtype),
                    down_intrablock_additional_residuals=residuals).sample.float()

    @torch.no_grad()
    def teacher_eps(self, z_t: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor,
                    negative_embeds: torch.Tensor, feats: Features) -> torch.Tensor:
        """Guided teacher noise prediction (frozen UNet, no LoRA, adapter features).

        Args:
            z_t: noisy latents.
            t: ``(B,)`` timesteps.
            prompt_embeds: positive text embeddings ``(B, 77, D)``.
            negative_embeds: negative-prompt embeddings ``(B, 77, D)``.
            feats: adapter features or None.

        Returns:
            ``eps_u + s (eps_c - eps_u)``, float32.
        """
        both = None if feats is None else [torch.cat([f, f]) for f in feats]
        with self.roles.use(TEACHER_ROLE):
            eps = self._unet_eps(self.teacher_unet, torch.cat([z_t, z_t]), torch.cat([t, t]),
                                 torch.cat([negative_embeds, prompt_embeds]), both)
        eps_u, eps_c = eps.chunk(2)
        return cfg_combine(eps_u, eps_c, self.cfg_scale)

    @torch.no_grad()
    def fake_eps(self, z_t: torch.Tensor, t: torch.Tensor, prompt_embeds: torch.Tensor,
                 feats: Features) -> torch.Tensor:
        """Fake-score noise prediction (UNet + 'aux' LoRA), no guidance."""
        with self.roles.use(AUX_ROLE):
            return self._unet_eps(self.fake_unet, z_t, t, prompt_embeds,
                                  feats if self.fake_uses_adapter else None)

    #: Whether :meth:`forward` needs the HQ latent (``target_z0``); VSD does not.
    needs_target = False

    def draw(self, z0: torch.Tensor, timesteps: Optional[torch.Tensor] = None,
             noise: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """The timestep and noise of one call (t first, then eps, from the same RNG).

        Args:
            z0: generator latents (only shape and device are used).
            timesteps: ``(B,)`` override of the t draw, or None.
            noise: override of the eps draw, or None.

        Returns:
            ``(timesteps, noise)``.
        """
        if timesteps is None:
            timesteps = sample_timesteps(*self.t_range, z0.shape[0], z0.device, self._rng)
        if noise is None:
            noise = sample_noise(z0.detach().float(), self._rng)
        return timesteps, noise

    @torch.no_grad()
    def gradient(self, z0: torch.Tensor, z_t: torch.Tensor, timesteps: torch.Tensor,
                 eps_real: torch.Tensor,
                 eps_other: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The score-difference gradient ``g`` w.r.t. ``z0`` (``grad_form``, ``eps_weighting``).

        ``eps_other`` is the fake score's prediction for VSD; a subclass may pass
        another score (TSD's target score) evaluated for the same ``z_t``.

        Args:
            z0: detached float32 generator latents (the x0-form normaliser).
            z_t: noisy latents the predictions belong to.
            timesteps: ``(B,)`` timesteps of ``z_t``.
            eps_real: teacher prediction.
            eps_other: the prediction ``eps_real`` is compared with.

        Returns:
            ``(g, x0_real, x0_other)``.
        """
        x0_real = x0_from_eps(self.scheduler, z_t, eps_real, timesteps)
        x0_other = x0_from_eps(self.scheduler, z_t, eps_other, timesteps)
        if self.grad_form == 'x0':
            weight = (z0 - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
            grad = (x0_other - x0_real) / weight
        else:
            w = torch.ones_like(timesteps, dtype=torch.float32)
            if self.eps_weighting == 'sigma2':
                w = 1 - self.scheduler.alphas_cumprod.to(z0.device)[timesteps].float()
            grad = w.reshape(-1, 1, 1, 1) * (eps_real - eps_other)
        return grad, x0_real, x0_other

    @staticmethod
    def surrogate_loss(z0: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``mse(z0, stopgrad(z0 - g))`` (mean): its gradient is ``2 g / numel(z0)``.

        Args:
            z0: generator latents, with grad.
            grad: the detached gradient ``g``.

        Returns:
            The scalar loss.
        """
        return F.mse_loss(z0.float(), (z0.detach().float() - grad).detach())

    def forward(self, z0: torch.Tensor, prompt_embeds: torch.Tensor,
                negative_embeds: torch.Tensor, feats: Features = None,
                timesteps: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """L_Reg for generator latents ``z0``; gradients flow to ``z0`` only.

        Args:
            z0: generator latents (scaled), with grad.
            prompt_embeds: text embeddings.
            negative_embeds: negative-prompt embeddings (same batch size).
            feats: adapter features of the condition (None: text only).
            timesteps: override the t draw (tests).
            noise: override the eps draw (tests).

        Returns:
            The loss and a dict with ``timesteps``, ``noise``, ``z_t``, ``x0_real``,
            ``x0_fake``, ``grad`` (detached) for logging and tests.
        """
        timesteps, noise = self.draw(z0, timesteps, noise)
        with torch.no_grad():
            z0_d = z0.detach().float()
            z_t = add_noise(self.scheduler, z0_d, noise, timesteps)
            eps_real = self.teacher_eps(z_t, timesteps, prompt_embeds, negative_embeds, feats)
            eps_fake = self.fake_eps(z_t, timesteps, prompt_embeds, feats)
            grad, x0_real, x0_fake = self.gradient(z0_d, z_t, timesteps, eps_real, eps_fake)
        loss = self.surrogate_loss(z0, grad)
        info = dict(timesteps=timesteps, noise=noise, z_t=z_t, x0_real=x0_real,
                    x0_fake=x0_fake, grad=grad)
        return loss, info
