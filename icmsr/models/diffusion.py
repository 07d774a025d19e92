"""The diffusion maths of the toolkit, in one place.

Every component that noises latents, inverts a noise prediction or draws
timesteps and noise (generator, regularizers, auxiliary model, analysis tools)
calls these functions, so the DDPM parameterisation lives here only:

* forward diffusion ``z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps`` is
  diffusers' own ``DDPMScheduler.add_noise`` (bitwise what OSEDiff trains with);
* the one-step x0 estimate ``(z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` is
  computed from ``alphas_cumprod`` because diffusers' one-step
  ``DDPMScheduler.step`` at t=999 raises;
* classifier-free guidance and the seeded timestep/noise draws.

The LoRA *roles* of the one shared UNet are named here too, since the maths
above is what each role computes.
"""
from typing import Any, Optional

import torch

#: LoRA role of the one-step generator's UNet branches.
GENERATOR_ROLE = 'generator'
#: The teacher runs the frozen base UNet: no LoRA role is active.
TEACHER_ROLE = None
#: LoRA role of the auxiliary (fake-score) model.
AUX_ROLE = 'aux'


def _abar(scheduler: Any, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``alphas_cumprod[t]`` as float32, shaped to broadcast against ``like``."""
    abar = scheduler.alphas_cumprod.to(like.device)[timesteps.to(like.device).long()].float()
    return abar.reshape(-1, *([1] * (like.dim() - 1)))


def add_noise(scheduler: Any, z0: torch.Tensor, noise: torch.Tensor,
              timesteps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion through ``scheduler.add_noise``, computed in float32.

    Args:
        scheduler: a ``DDPMScheduler`` (anything with ``add_noise``).
        z0: clean latents ``(B, C, H, W)``.
        noise: noise, same shape.
        timesteps: ``(B,)`` integer timesteps.

    Returns:
        ``z_t`` in ``z0``'s dtype.
    """
    z_t = scheduler.add_noise(z0.float(), noise.float(), timesteps.to(z0.device).long())
    return z_t.to(z0.dtype)


def x0_from_eps(scheduler: Any, z_t: torch.Tensor, eps: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
    """DDPM x0 estimate ``(z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` in float32.

    Args:
        scheduler: a ``DDPMScheduler`` (only ``alphas_cumprod`` is read).
        z_t: noisy latents ``(B, C, H, W)``.
        eps: predicted noise, same shape.
        timesteps: ``(B,)`` or scalar integer timesteps.

    Returns:
        The x0 estimate in ``z_t``'s dtype.
    """
    abar = _abar(scheduler, timesteps, z_t)
    x0 = (z_t.float() - (1 - abar).sqrt() * eps.float()) / abar.sqrt()
    return x0.to(z_t.dtype)


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ``eps_u + s * (eps_c - eps_u)``.

    Args:
        eps_uncond: prediction with the negative prompt.
        eps_cond: prediction with the prompt.
        scale: guidance scale s.

    Returns:
        The guided prediction.
    """
    return eps_uncond + scale * (eps_cond - eps_uncond)


def seeded_rng(seed: Optional[int]) -> Optional[torch.Generator]:
    """A CPU random-number generator seeded with ``seed``, or None for torch's global RNG.

    Args:
        seed: the seed, or None.

    Returns:
        A ``torch.Generator`` or None.
    """
    return None if seed is None else torch.Generator().manual_seed(int(seed))


def sample_timesteps(low: int, high: int, batch: int, device: torch.device,
                     rng: Optional[torch.Generator]) -> torch.Tensor:
    """``batch`` integer timesteps uniform in ``[low, high)`` (one per sample).

    Args:
        low: inclusive lower bound.
        high: exclusive upper bound.
        batch: how many.
        device: where the result goes.
        rng: CPU generator for seeded draws (None: torch's global RNG).

    Returns:
        ``(batch,)`` long tensor.
    """
    return torch.randint(low, high, (batch, ), generator=rng).to(device)


def sample_noise(like: torch.Tensor, rng: Optional[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped like ``like`` (drawn on the CPU when ``rng`` is given).

    Args:
        like: tensor whose shape, dtype and device the noise takes.
        rng: CPU generator for seeded draws (None: torch's global RNG on ``like``'s device).

    Returns:
        The noise.
    """
    if rng is None:
        return torch.randn_like(like)
    return torch.randn(like.shape, generator=rng, dtype=like.dtype).to(like.device)
