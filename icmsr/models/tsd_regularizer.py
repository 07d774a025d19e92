"""Target Score Distillation (TSD-SR) for an epsilon-prediction teacher: VSD + TSM, and DASM.

TSD-SR distils SD3 (rectified flow) with two score-difference terms on the
generator latent ``z0`` (docs/model.md, "TSD-SR on SD v1-4", derives them for the
DDPM/epsilon parameterisation used here):

* VSD: teacher minus fake score at the noised generator latent ``z_t``
  (:class:`~icmsr.models.regularizer.VSDRegularizer`'s own gradient);
* TSM (Target Score Matching): teacher at ``z_t`` minus teacher at the HQ latent
  noised with the *same* ``eps`` and ``t``; the HQ latent plays the fake score's
  part, so the very same gradient formula applies with ``eps_other`` swapped;
* DASM (Distribution-Aware Sampling): both terms are summed over a short
  deterministic (DDIM) trajectory from the drawn ``t`` towards low noise, with
  per-step weights.
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from icmsr.registry import MODELS
from .diffusion import add_noise, sample_timesteps, x0_from_eps
from .regularizer import Features, VSDRegularizer

#: DASM settings of TSD-SR's released training script (train/train.py with
#: ``--use_dasm --use_random_bias``): 4 steps, 50 timesteps apart, weights 1, 0.3, 0.3, 0.3.
DASM_DEFAULTS = dict(steps=4, stride=50, step_weights=(1.0, 0.3, 0.3, 0.3), jitter=True)


def dasm_trajectory(start: torch.Tensor, steps: int, stride: int,
                    jitter: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The DASM timesteps: ``steps`` evaluation points and the end point, per sample.

    From ``t0`` the trajectory spans ``d = min(steps * stride + jitter, t0)``
    timesteps towards ``t = 0`` and point ``k`` is ``t0 - floor(k d / steps)``
    (TSD-SR walks its timestep index with ``linspace(...).long()``, i.e. floor).
    Near ``t = 0`` the span shrinks instead of stepping below 0.

    Args:
        start: ``(B,)`` long start timesteps ``t0``.
        steps: number of evaluation points K.
        stride: timesteps between points before clipping.
        jitter: ``(B,)`` long offsets of the span (TSD-SR's random bias), or None.

    Returns:
        ``(B, K + 1)`` long timesteps; columns ``0..K-1`` are evaluated, column K is
        only the end of the last (unused) step.
    """
    span = torch.full_like(start, steps * stride)
    if jitter is not None:
        span = span + jitter.to(start.device)
    span = torch.minimum(span, start)
    k = torch.arange(steps + 1, device=start.device)
    return start[:, None] - torch.div(k[None, :] * span[:, None], steps, rounding_mode='floor')


@MODELS.register_module()
class TSDRegularizer(VSDRegularizer):
    """TSD-SR's regularizer: ``(1 - w_tsm) VSD + w_tsm TSM``, optionally over a DASM trajectory.

    For each evaluated step ``k`` (one step without DASM) at timestep ``t_k``:

    * ``g_vsd_k = gradient(z0, z_k, t_k, eps_real(z_k), eps_fake(z_k))``
    * ``g_tsm_k = gradient(z0, z_k, t_k, eps_real(z_k), eps_real(h_k))``

    with ``gradient`` the parent's formula (``grad_form`` 'x0' or 'eps'), ``z_0 =
    a z0 + b eps`` and ``h_0 = a z_hq + b eps`` (same noise), and the total
    ``g = sum_k w_k [(1 - w_tsm) g_vsd_k + w_tsm g_tsm_k]``; the loss is the parent's
    surrogate ``mse(z0, sg(z0 - g))``. DASM moves ``z_k`` with the fake score and
    ``h_k`` with the teacher by one deterministic DDIM step to ``t_{k+1}`` (the
    epsilon form of TSD-SR's Euler step). ``tsm_weight=0`` and ``dasm=None`` give
    exactly the parent's VSD (same draws, same gradient, bit for bit).

    Args:
        *args: :class:`VSDRegularizer` arguments (teacher, fake score, scheduler, ...).
        tsm_weight: weight of TSM, ``1 - lambda`` of TSD-SR (its code: ``lambda = 0.7``);
            0 switches TSM off (no HQ latent needed, no extra teacher pass).
        dasm: None (off: one timestep, as VSD) or a dict with ``steps``, ``stride``,
            ``step_weights`` (one per step) and ``jitter`` (draw TSD-SR's random span
            offset in ``[-stride // 2, stride // 2)`` per sample); missing keys take
            :data:`DASM_DEFAULTS`.
        **kwargs: :class:`VSDRegularizer` keyword arguments (``t_range`` gives ``t0``).
    """

    def __init__(self, *args: Any, tsm_weight: float = 0.3,
                 dasm: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 <= float(tsm_weight) <= 1.0:
            raise ValueError(f'TSDRegularizer tsm_weight must be in [0, 1], got {tsm_weight!r}')
        self.tsm_weight = float(tsm_weight)
        self.dasm = None if dasm is None else self._dasm_settings(dasm)

    @staticmethod
    def _dasm_settings(dasm: Dict[str, Any]) -> Dict[str, Any]:
        unknown = set(dasm) - set(DASM_DEFAULTS)
        if unknown:
            raise KeyError(f'TSDRegularizer dasm: unknown keys {sorted(unknown)}; '
                           f'use {sorted(DASM_DEFAULTS)}.')
        cfg = dict(DASM_DEFAULTS, **dasm)
        cfg['steps'], cfg['stride'] = int(cfg['steps']), int(cfg['stride'])
        cfg['step_weights'] = tuple(float(w) for w in cfg['step_weights'])
        if cfg['steps'] < 1 or cfg['stride'] < 1:
            raise ValueError(f"TSDRegularizer dasm: steps and stride must be >= 1, got {cfg}")
        if len(cfg['step_weights']) != cfg['steps']:
            raise ValueError(f"TSDRegularizer dasm: step_weights needs one weight per step "
                             f"({cfg['steps']}), got {list(cfg['step_weights'])}")
        return cfg

    @property
    def needs_target(self) -> bool:  # type: ignore[override]
        """True when TSM is on: :meth:`forward` then needs ``target_z0``."""
        return self.tsm_weight > 0

    @property
    def step_weights(self) -> Sequence[float]:
        """The per-step weights ``w_k`` (``(1.0,)`` without DASM)."""
        return (1.0, ) if self.dasm is None else self.dasm['step_weights']

    def trajectory(self, start: torch.Tensor) -> torch.Tensor:
        """Timesteps of every evaluated step, drawing the DASM jitter when configured.

        Args:
            start: ``(B,)`` start timesteps ``t0`` (from :meth:`draw`).

        Returns:
            ``(B, K + 1)`` long timesteps (:func:`dasm_trajectory`); ``(B, 1)`` without DASM.
        """
        if self.dasm is None:
            return start[:, None]
        jitter = None
        if self.dasm['jitter']:
            half = self.dasm['stride'] // 2
            jitter = sample_timesteps(-half, half, start.shape[0], start.device, self._rng)
        return dasm_trajectory(start, self.dasm['steps'], self.dasm['stride'], jitter)

    def _ddim_step(self, z_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                   t_next: torch.Tensor) -> torch.Tensor:
        # Deterministic DDIM: re-noise the x0 estimate with the predicted noise.
        return add_noise(self.scheduler, x0_from_eps(self.scheduler, z_t, eps, t), eps, t_next)

    def _teacher_pair(self, z_t: torch.Tensor, h_t: Optional[torch.Tensor], t: torch.Tensor,
                      embeds: torch.Tensor, negative: torch.Tensor,
                      feats: Features) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Teacher at ``z_t`` and (TSM) at ``h_t``, in one batched pass when both are needed."""
        if h_t is None:
            return self.teacher_eps(z_t, t, embeds, negative, feats), None
        both = None if feats is None else [torch.cat([f, f]) for f in feats]
        eps = self.teacher_eps(torch.cat([z_t, h_t]), torch.cat([t, t]),
                               torch.cat([embeds, embeds]), torch.cat([negative, negative]), both)
        return eps.chunk(2)

    def forward(self, z0: torch.Tensor, prompt_embeds: torch.Tensor,
                negative_embeds: torch.Tensor, feats: Features = None,
                timesteps: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None,
                target_z0: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """L_TSD for generator latents ``z0``; gradients flow to ``z0`` only.

        Args:
            z0: generator latents (scaled), with grad.
            prompt_embeds: text embeddings.
            negative_embeds: negative-prompt embeddings.
            feats: condition features for the teacher (and fake score), or None.
            timesteps: ``(B,)`` start timesteps, or ``(B, K + 1)`` a whole trajectory
                (tests); None draws them.
            noise: override the eps draw (tests).
            target_z0: the HQ latent (scaled like ``z0``); required when ``tsm_weight > 0``.

        Returns:
            The loss and a dict with ``timesteps`` (start), ``trajectory``, ``noise``,
            ``z_t``, ``x0_real``, ``x0_fake``, ``x0_target`` (first step), ``grad`` (total),
            ``grad_vsd`` and ``grad_tsm`` (step-weighted sums, None when off).
        """
        if self.needs_target and target_z0 is None:
            raise ValueError('TSDRegularizer: the TSM term needs the HQ latent: call it with '
                             'target_z0=<scaled VAE latent of the GT> (ICMSR.train_step passes '
                             'it when regularizer.needs_target), or set tsm_weight=0.')
        if target_z0 is not None and target_z0.shape != z0.shape:
            raise ValueError(f'TSDRegularizer: target_z0 has shape {tuple(target_z0.shape)}, '
                             f'the generator latent {tuple(z0.shape)}; they must match.')
        explicit = timesteps is not None and timesteps.dim() == 2
        start, noise = self.draw(z0, timesteps[:, 0] if explicit else timesteps, noise)
        traj = timesteps if explicit else self.trajectory(start)
        weights = self.step_weights
        if traj.shape[1] < len(weights):
            raise ValueError(f'TSDRegularizer: a trajectory of {traj.shape[1]} timesteps for '
                             f'{len(weights)} steps.')
        use_tsm = self.needs_target
        with torch.no_grad():
            z0_d = z0.detach().float()
            z_t = add_noise(self.scheduler, z0_d, noise, traj[:, 0])
            h_t = add_noise(self.scheduler, target_z0.detach().float(), noise,
                            traj[:, 0]) if use_tsm else None
            grad_vsd = grad_tsm = None
            first: Dict[str, Any] = {}
            for k, w in enumerate(weights):
                t = traj[:, k]
                eps_real, eps_target = self._teacher_pair(z_t, h_t, t, prompt_embeds,
                                                          negative_embeds, feats)
                eps_fake = self.fake_eps(z_t, t, prompt_embeds, feats)
                g, x0_real, x0_fake = self.gradient(z0_d, z_t, t, eps_real, eps_fake)
                grad_vsd = w * g if grad_vsd is None else grad_vsd + w * g
                if use_tsm:
                    g_tsm, _, x0_target = self.gradient(z0_d, z_t, t, eps_real, eps_target)
                    grad_tsm = w * g_tsm if grad_tsm is None else grad_tsm + w * g_tsm
                if k == 0:
                    first = dict(z_t=z_t, x0_real=x0_real, x0_fake=x0_fake,
                                 x0_target=x0_target if use_tsm else None)
                if k + 1 < len(weights):
                    t_next = traj[:, k + 1]
                    z_t = self._ddim_step(z_t, eps_fake, t, t_next)
                    if use_tsm:
                        h_t = self._ddim_step(h_t, eps_target, t, t_next)
            grad = (1.0 - self.tsm_weight) * grad_vsd
            if use_tsm:
                grad = grad + self.tsm_weight * grad_tsm
        loss = self.surrogate_loss(z0, grad)
        info = dict(timesteps=start, trajectory=traj, noise=noise, grad=grad,
                    grad_vsd=grad_vsd, grad_tsm=grad_tsm, **first)
        return loss, info
