"""The one-step generator G_theta of OSEDiff / ICM-SR."""
import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from icmsr.registry import MODELS, build_or_use
from .diffusion import GENERATOR_ROLE, x0_from_eps
from .lora import ALWAYS, LoRARoles, own_or_share

# OSEDiff's UNet LoRA targets (peft-style suffix match; see lora.match_targets).
UNET_LORA_TARGETS = ('to_k', 'to_q', 'to_v', 'to_out.0', 'conv', 'conv1', 'conv2',
                     'conv_shortcut', 'conv_out', 'proj_in', 'proj_out', 'ff.net.2',
                     'ff.net.0.proj')
# VAE encoder only (plus quant_conv), by full name: the short names above would
# hit the decoder too.
VAE_ENCODER_LORA_TARGETS = (r'(encoder\.(.*\.)?(conv_in|conv1|conv2|conv|conv_shortcut|conv_out'
                            r'|to_k|to_q|to_v|to_out\.0)|quant_conv)')


@MODELS.register_module()
class OneStepGenerator(nn.Module):
    """VAE encoder (+LoRA) -> UNet (+LoRA) at one timestep -> x0 -> frozen VAE decoder.

    ``z_L = E(x_LQ) * scaling_factor``; ``eps = UNet(z_L, t, c)``;
    ``z0 = (z_L - sqrt(1 - abar_t) eps) / sqrt(abar_t)``; ``x = D(z0 / scaling_factor)``.

    Args:
        vae: ``AutoencoderKL`` or its config; owned (registered) by the generator.
        unet: ``UNet2DConditionModel`` or its config. A config is built and
            owned here; a module is *shared* (kept as a plain reference, its
            owner moves/saves it): this is how ICMSR shares one UNet with the
            teacher and the fake score.
        scheduler: ``DDPMScheduler`` or its config (its noise schedule gives the x0 formula).
        roles: the :class:`LoRARoles` switch of the shared UNet (``OneStepSR.roles``).
        timestep: the single timestep (OSEDiff: 999).
        lora_rank: rank of the UNet and VAE-encoder LoRA.
        lora_alpha: LoRA alpha; OSEDiff leaves peft's default 8 (scale 2 at rank 4).
        unet_lora_targets: UNet target names (suffix match) or a regex.
        vae_lora_targets: VAE target regex (encoder only) or names; None: no VAE LoRA.
        train_conv_in: train a private copy of the UNet's ``conv_in`` (OSEDiff does);
            the frozen original stays in use for the teacher and fake score.
        train_latent: ``'sample'`` (OSEDiff) or ``'mode'`` of the VAE posterior in training.
        infer_latent: the same at inference; ``'mode'`` keeps inference deterministic.
        clamp_output: clamp the decoded image to [-1, 1] (OSEDiff does, also in training).
        gradient_checkpointing: checkpoint UNet and VAE activations.
    """

    def __init__(self, vae: Any, unet: Any, scheduler: Any, roles: LoRARoles,
                 timestep: int = 999, lora_rank: int = 4, lora_alpha: Optional[float] = 8,
                 unet_lora_targets: Union[str, Sequence[str]] = UNET_LORA_TARGETS,
                 vae_lora_targets: Optional[Union[str, Sequence[str]]] = VAE_ENCODER_LORA_TARGETS,
                 train_conv_in: bool = True, train_latent: str = 'sample',
                 infer_latent: str = 'mode', clamp_output: bool = True,
                 gradient_checkpointing: bool = False) -> None:
        super().__init__()
        for name, value in (('train_latent', train_latent), ('infer_latent', infer_latent)):
            if value not in ('sample', 'mode'):
                raise ValueError(f"OneStepGenerator {name} must be 'sample' or 'mode', got {value!r}")
        self.vae = build_or_use(vae)
        self.vae.requires_grad_(False)
        own_or_share(self, 'unet', unet).requires_grad_(False)
        self.scheduler = build_or_use(scheduler)
        self.roles = roles
        self.lora_fused = False
        self.timestep = int(timestep)
        self.train_latent, self.infer_latent = train_latent, infer_latent
        self.clamp_output = clamp_output
        # The LoRA branches live here, so the generator owns all its trainables.
        self.unet_lora = roles.attach(self.unet, GENERATOR_ROLE, unet_lora_targets, lora_rank,
                                      lora_alpha)
        self.vae_lora = (roles.attach(self.vae, ALWAYS, vae_lora_targets, lora_rank, lora_alpha)
                         if vae_lora_targets else nn.ModuleDict())
        self.conv_in: Optional[nn.Module] = None
        if train_conv_in:
            self.conv_in = copy.deepcopy(self.unet.conv_in).float().requires_grad_(True)
            roles.override(self.unet.conv_in, GENERATOR_ROLE, self.conv_in)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            self.vae.enable_gradient_checkpointing()

    @property
    def scaling_factor(self) -> float:
        """The VAE's latent scaling factor (0.18215 for SD v1)."""
        return float(self.vae.config.scaling_factor)

    def trainable_parameters(self) -> List[nn.Parameter]:
        """LoRA of VAE encoder and UNet, plus the private ``conv_in`` when trained."""
        params = list(self.unet_lora.parameters()) + list(self.vae_lora.parameters())
        if self.conv_in is not None:
            params += list(self.conv_in.parameters())
        return params

    def encode(self, lq: torch.Tensor) -> torch.Tensor:
        """Encode an LQ image in ``[-1, 1]`` to scaled latents ``z_L``.

        Args:
            lq: ``(B, 3, H, W)`` in ``[-1, 1]``, H and W multiples of 8.

        Returns:
            ``(B, 4, H/8, W/8)`` latents times the scaling factor.
        """
        dtype = next(self.vae.parameters()).dtype
        dist = self.vae.encode(lq.to(dtype)).latent_dist
        use = self.train_latent if self.training else self.infer_latent
        z = dist.sample() if use == 'sample' else dist.mode()
        return z * self.scaling_factor

    def denoise(self, z_l: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """One UNet step at ``timestep`` and the x0 formula.

        Args:
            z_l: scaled LQ latents.
            prompt_embeds: ``(B, 77, D)`` text embeddings.

        Returns:
            ``z0``, float32 latents.
        """
        dtype = self.unet.dtype
        t = torch.full((z_l.shape[0], ), self.timestep, device=z_l.device, dtype=torch.long)
        with self.roles.use(GENERATOR_ROLE):
            eps = self.unet(z_l.to(dtype), t,
                            encoder_hidden_states=prompt_embeds.to(dtype)).sample
        return x0_from_eps(self.scheduler, z_l.float(), eps.float(), t)

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """Decode latents with the frozen decoder to an image in ``[-1, 1]``.

        Args:
            z0: scaled latents.

        Returns:
            ``(B, 3, 8h, 8w)`` float32 image (clamped when ``clamp_output``).
        """
        dtype = next(self.vae.parameters()).dtype
        img = self.vae.decode((z0 / self.scaling_factor).to(dtype)).sample.float()
        return img.clamp(-1, 1) if self.clamp_output else img

    def forward(self, lq: torch.Tensor,
                prompt_embeds: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Super-resolve: ``(image[-1, 1], z0)``.

        Args:
            lq: ``(B, 3, H, W)`` in ``[-1, 1]`` (already at the output size).
            prompt_embeds: text embeddings.

        Returns:
            The decoded image and the latent ``z0`` it came from.
        """
        z0 = self.denoise(self.encode(lq), prompt_embeds)
        return self.decode(z0), z0


def fuse_generator_lora(generator: OneStepGenerator) -> Dict[str, int]:
    """Fold the LoRA of the VAE encoder and the UNet, and the trained ``conv_in``, into the base.

    Folding removes two extra matmuls/convs per adapted layer at every call. After
    fusing, the generator's outputs are unchanged (up to rounding) and its LoRA
    branches are detached (they stay in ``generator.unet_lora`` / ``vae_lora`` only
    as a record). Export LoRA files before fusing. Only fuse a generator that owns
    its UNet and VAE (as built by :func:`icmsr.apis.init_model`): fused weights
    would change the teacher and the fake score if the UNet were shared with them.

    Args:
        generator: the generator to fuse in place.

    Returns:
        Number of fused layers per part: ``{'unet': n, 'vae': m, 'conv_in': 0|1}``.

    Raises:
        RuntimeError: The UNet carries LoRA of other roles (shared with a
            teacher/fake score), or the generator was fused already.
    """
    if generator.lora_fused:
        raise RuntimeError('This generator is already fused.')
    roles = generator.roles
    other = set(roles.count(generator.unet)) - {GENERATOR_ROLE, ALWAYS}
    if other:
        raise RuntimeError(
            f'The UNet also carries LoRA of roles {sorted(other)} (it is shared with the training '
            'model); fusing would change them. Build an inference model with icmsr.apis.init_model.')
    counts = dict(unet=roles.fuse(generator.unet, generator.unet_lora, GENERATOR_ROLE),
                  vae=roles.fuse(generator.vae, generator.vae_lora, ALWAYS), conv_in=0)
    if generator.conv_in is not None:
        target = generator.unet.conv_in
        with torch.no_grad():
            target.weight.copy_(generator.conv_in.weight)
            if target.bias is not None:
                target.bias.copy_(generator.conv_in.bias)
        roles.override(target, GENERATOR_ROLE, None)
        counts['conv_in'] = 1
    generator.lora_fused = True
    return counts
