"""Pretrain the tiny SD-like base of ``configs/icmsr_tiny.py`` on scikit-image's sample photos.

``python tools/pretrain_tiny_base.py --out configs/tiny_base --seed 0`` builds the tiny
architectures the config defines (``tiny_unet``, ``tiny_vae``, ``tiny_text_encoder``,
``sd14_scheduler``, ``tiny_adapter_color``, ``tiny_adapter_canny``, a byte-level
tokenizer) and gives them small real priors, in three stages on random 64 px crops
(with flips) of photos that ship with scikit-image:

1. the VAE as an autoencoder (MSE + a small KL term); its ``scaling_factor`` is then
   set to 1 / std of its latents, as SD's was, so the UNet sees unit-variance latents;
2. the UNet as an epsilon-prediction denoiser of those latents at the scheduler's
   noise levels, conditioned on the empty prompt (the text encoder stays at its seeded
   initialisation: the tiny base knows no words);
3. each T2I adapter (colormap, Canny, from ``ConditionExtractor``) on the same
   denoising loss with the UNet frozen, so the tiny teacher responds to structure.

It prints the held-out reconstruction PSNR and denoising losses, then writes a
diffusers-layout folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``, ``adapter_color/``, ``adapter_canny/`` and a README with the command,
the figures and each file's sha256) that the ``SD*`` builders load with
``from_pretrained=<folder>``. The UNet is stored in float16 in shards under 1 MB (the
only part above 2 MB in float32); it loads as float32. Deterministic for a seed:
one thread and deterministic algorithms make the CPU float results reproducible.
"""
import argparse
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from tiny_base_folder import save_base
from tiny_base_photos import HELD_OUT_IMAGE, TRAIN_IMAGES, CropSampler, held_out_image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'icmsr_tiny.py')
DEFAULT_STEPS = dict(vae=1500, unet=1600, adapter=300)
KL_WEIGHT = 1e-4
SNR_GAMMA = 5.0


def byte_level_tokenizer() -> Any:
    """CLIP's byte alphabet without merges: 514 tokens, enough for the tiny text encoder.

    Returns:
        A ``CLIPTokenizer`` (77 tokens max).
    """
    from transformers import CLIPTokenizer
    # CLIP/GPT-2 byte alphabet: printable bytes map to themselves, the others above 255,
    # printable ones first (the order fixes the token ids).
    printable = (list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1))
                 + list(range(ord('®'), ord('ÿ') + 1)))
    others = [b for b in range(256) if b not in printable]
    alphabet = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]
    tokens = alphabet + [a + '</w>' for a in alphabet] + ['<|startoftext|>', '<|endoftext|>']
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(tokens)}, merges=[],
                         model_max_length=77)


def build_tiny_stack(config: str = CONFIG) -> Dict[str, Any]:
    """Build the randomly initialised tiny components from the config's architecture dicts.

    Args:
        config: a config defining ``tiny_unet``, ``tiny_vae``, ``tiny_text_encoder``,
            ``sd14_scheduler``, ``tiny_adapter_color`` and ``tiny_adapter_canny``.

    Returns:
        ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``,
        ``adapter_color``, ``adapter_canny`` (built with the current torch seed).
    """
    from mmengine.config import Config

    from icmsr.models import backbones
    cfg = Config.fromfile(config)
    return dict(
        unet=backbones.build_unet(from_config=cfg.tiny_unet),
        vae=backbones.build_vae(from_config=cfg.tiny_vae),
        text_encoder=backbones.build_text_encoder(from_config=cfg.tiny_text_encoder),
        tokenizer=byte_level_tokenizer(),
        scheduler=backbones.build_scheduler(from_config=cfg.sd14_scheduler),
        adapter_color=backbones.build_t2i_adapter(from_config=cfg.tiny_adapter_color),
        adapter_canny=backbones.build_t2i_adapter(from_config=cfg.tiny_adapter_canny))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in ``[0, 1]``."""
    mse = F.mse_loss(a.clamp(0, 1).double(), b.clamp(0, 1).double()).item()
    return 10 * np.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def reconstruct(vae: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Encode (posterior mode) and decode a ``[0, 1]`` batch with the VAE."""
    z = vae.encode(image * 2 - 1).latent_dist.mode()
    return ((vae.decode(z).sample + 1) / 2).clamp(0, 1)


def optimizer_step(opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor) -> None:
    """One update: clear the gradients, back-propagate ``loss``, step the optimizer and the schedule.

    Args:
        opt: The optimizer.
        sched: Its learning-rate schedule.
        loss: The loss of this step.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()


def train_vae(vae: torch.nn.Module, crops: CropSampler, steps: int, batch: int = 8,
              lr: float = 2e-3) -> Tuple[float, float]:
    """Train the VAE as an autoencoder: MSE of the decoded posterior sample + KL.

    Args:
        vae: the ``AutoencoderKL`` (trained in place).
        crops: crop source.
        steps: optimiser steps.
        batch: crops per step.
        lr: Adam learning rate (cosine decay to 0).

    Returns:
        The scaling factor set on the VAE (1 / std of its latents) and the mean
        training MSE of the last tenth of the steps.
    """
    vae.requires_grad_(True).train()
    tail = []
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    for _ in range(steps):
        x = crops(batch) * 2 - 1
        post = vae.encode(x).latent_dist
        # diffusers' kl() sums over latent elements; per image pixel it matches the MSE.
        kl = post.kl().mean() / x[0].numel()
        mse = F.mse_loss(vae.decode(post.sample()).sample, x)
        loss = mse + KL_WEIGHT * kl
        tail = (tail + [float(mse.detach())])[-max(steps // 10, 1):]
        optimizer_step(opt, sched, loss)
    vae.requires_grad_(False).eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(crops(32) * 2 - 1).latent_dist.sample() for _ in range(4)])
    factor = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=factor)
    return factor, float(np.mean(tail)) if tail else float('nan')


def predict_noise(unet: torch.nn.Module, scheduler: Any, latents: torch.Tensor,
                  embeds: torch.Tensor, generator: torch.Generator,
                  residuals: Optional[List[torch.Tensor]] = None,
                  t_range: Sequence[int] = (0, 1000)) -> Dict[str, torch.Tensor]:
    """Noise latents at random timesteps and predict the noise (epsilon prediction).

    Args:
        unet: the UNet.
        scheduler: the ``DDPMScheduler`` (noise levels, ``add_noise``).
        latents: scaled clean latents ``(B, 4, h, w)``.
        embeds: prompt embeddings ``(1, 77, D)``, repeated over the batch.
        generator: source of timesteps and noise.
        residuals: adapter features for the down blocks, or None.
        t_range: timesteps are drawn from ``[low, high)``.

    Returns:
        ``t``, ``noise``, ``z_t`` and the prediction ``eps``.
    """
    b = latents.shape[0]
    t = torch.randint(t_range[0], t_range[1], (b, ), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    z_t = scheduler.add_noise(latents, noise, t)
    eps = unet(z_t, t, encoder_hidden_states=embeds.expand(b, -1, -1),
               down_intrablock_additional_residuals=residuals).sample
    return dict(t=t, noise=noise, z_t=z_t, eps=eps)


def weighted_eps_loss(pred: Dict[str, torch.Tensor], scheduler: Any,
                      gamma: float = SNR_GAMMA) -> torch.Tensor:
    """Epsilon MSE with min-SNR-gamma weights ``min(SNR_t, gamma) / SNR_t``.

    Uniform weights let the easy, low-noise steps dominate the gradient; the one-step
    generator and the heavy-noise teacher need the high-noise end accurate.

    Args:
        pred: output of :func:`predict_noise`.
        scheduler: the ``DDPMScheduler``.
        gamma: SNR cap.

    Returns:
        The scalar loss.
    """
    abar = scheduler.alphas_cumprod[pred['t']].float()
    snr = abar / (1 - abar)
    weight = torch.clamp(snr, max=gamma) / snr
    per_sample = ((pred['eps'] - pred['noise']) ** 2).mean(dim=(1, 2, 3))
    return (weight * per_sample).mean()


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, x01: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """Scaled VAE latents (posterior sample) of a ``[0, 1]`` batch."""
    dist = vae.encode(x01 * 2 - 1).latent_dist
    z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator)
    return z * vae.config.scaling_factor


def train_denoiser(stack: Dict[str, Any], crops: CropSampler, steps: int, embeds: torch.Tensor,
                   generator: torch.Generator, condition: Optional[str] = None,
                   batch: int = 16, lr: float = 1e-3) -> float:
    """Train the UNet (``condition=None``) or one adapter (frozen UNet): epsilon MSE.

    Args:
        stack: the components (``unet``, ``vae``, ``scheduler``, ``adapter_<condition>``).
        crops: crop source.
        steps: optimiser steps.
        embeds: empty-prompt embeddings.
        generator: timesteps and noise.
        condition: None (UNet), ``'color'`` or ``'canny'`` (that adapter).
        batch: crops per step.
        lr: Adam learning rate (cosine decay to 0).

    Returns:
        The mean training loss of the last tenth of the steps.
    """
    from icmsr.models.conditions import ConditionExtractor
    tail = []
    unet = stack['unet']
    trained = unet if condition is None else stack[f'adapter_{condition}']
    # The recipe the shipped base was trained with (8x8 antialiased colormap, grayscale Canny).
    extractor = ConditionExtractor(mode='colormap' if condition == 'color' else 'canny',
                                   recipe='antialiased8')
    trained.requires_grad_(True).train()
    opt = torch.optim.Adam(trained.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    for _ in range(steps):
        x = crops(batch)
        latents = encode_latents(stack['vae'], x, generator)
        feats = None if condition is None else list(trained(extractor(x)))
        pred = predict_noise(unet, stack['scheduler'], latents, embeds, generator, feats)
        loss = weighted_eps_loss(pred, stack['scheduler'])
        tail = (tail + [float(loss.detach())])[-max(steps // 10, 1):]
        optimizer_step(opt, sched, loss)
    trained.requires_grad_(False).eval()
    return float(np.mean(tail)) if tail else float('nan')


@torch.no_grad()
def empty_prompt_embeds(stack: Dict[str, Any]) -> torch.Tensor:
    """The tiny text encoder's embedding of the empty prompt, ``(1, 77, D)``."""
    tok = stack['tokenizer']
    ids = tok([''], padding='max_length', max_length=tok.model_max_length,
              return_tensors='pt').input_ids
    return stack['text_encoder'](ids)[0]


@torch.no_grad()
def evaluate(stack: Dict[str, Any], seed: int) -> Dict[str, float]:
    """Held-out figures: VAE PSNR on the held-out photo, denoising errors on its crops.

    Args:
        stack: the components.
        seed: seed of the held-out crops, timesteps and noise.

    Returns:
        ``vae_psnr`` (dB); ``denoise_loss``, the epsilon MSE over all timesteps; and
        at heavy noise (t in [600, 900)) the MSE of the one-step clean-latent estimate
        without adapter (``x0_mse_text``) and with each adapter (``x0_mse_color``,
        ``x0_mse_canny``): what the teacher knows, and what the conditions add.
    """
    from icmsr.models.conditions import ConditionExtractor
    from icmsr.models.generator import x0_from_eps
    image = held_out_image()
    out = dict(vae_psnr=psnr(reconstruct(stack['vae'], image), image))
    crops = CropSampler([HELD_OUT_IMAGE], seed, scales=(128, 192))(64)
    embeds = empty_prompt_embeds(stack)
    unet, sched = stack['unet'], stack['scheduler']
    latents = encode_latents(stack['vae'], crops, torch.Generator().manual_seed(seed))

    def run(residuals=None, t_range=(0, 1000)) -> Dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)  # same t and noise for every row
        return predict_noise(unet, sched, latents, embeds, gen, residuals, t_range)

    pred = run()
    out['denoise_loss'] = float(F.mse_loss(pred['eps'], pred['noise']))
    rows = dict(text=None)
    for name, mode in (('color', 'colormap'), ('canny', 'canny')):
        rows[name] = list(stack[f'adapter_{name}'](
            ConditionExtractor(mode=mode, recipe='antialiased8')(crops)))
    for name, feats in rows.items():
        pred = run(feats, (600, 900))
        x0 = x0_from_eps(sched, pred['z_t'], pred['eps'], pred['t'])
        out[f'x0_mse_{name}'] = float(F.mse_loss(x0, latents))
    return out


def pretrain(seed: int = 0, steps: Optional[Dict[str, int]] = None, config: str = CONFIG,
             images: Sequence[str] = TRAIN_IMAGES, log: bool = True) -> Dict[str, Any]:
    """Build and train the whole tiny base (the script's training function).

    Args:
        seed: seeds initialisation, crops, timesteps and noise.
        steps: ``vae``, ``unet``, ``adapter`` optimiser steps (defaults: ``DEFAULT_STEPS``).
        config: config with the architecture dicts.
        images: scikit-image sample names to train on.
        log: print each stage's time.

    Returns:
        The components (as :func:`build_tiny_stack`), trained, frozen, in eval mode.
    """
    steps = dict(DEFAULT_STEPS, **(steps or {}))
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _pretrain(seed, steps, config, images, log)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _pretrain(seed: int, steps: Dict[str, int], config: str, images: Sequence[str],
              log: bool) -> Dict[str, Any]:
    torch.manual_seed(seed)
    stack = build_tiny_stack(config)
    for module in stack.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    crops = CropSampler(images, seed)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()

    def done(stage: str) -> None:
        if log:
            print(f'[pretrain] {stage} done at {time.perf_counter() - start:.0f} s', flush=True)

    factor, mse = train_vae(stack['vae'], crops, steps['vae'])
    done(f'VAE: {steps["vae"]} steps, training MSE {mse:.4f} ([-1, 1] units), '
         f'scaling_factor {factor:.4f}')
    embeds = empty_prompt_embeds(stack)
    loss = train_denoiser(stack, crops, steps['unet'], embeds, generator)
    done(f'UNet: {steps["unet"]} steps, training denoising loss {loss:.4f}')
    for name in ('color', 'canny'):
        loss = train_denoiser(stack, crops, steps['adapter'], embeds, generator, condition=name)
        done(f'adapter_{name}: {steps["adapter"]} steps, training denoising loss {loss:.4f}')
    return stack


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=osp.join('configs', 'tiny_base'), help='output folder')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--config', default=CONFIG, help='config holding the tiny architecture dicts')
    for name, value in DEFAULT_STEPS.items():
        p.add_argument(f'--{name}-steps', type=int, default=value)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Pretrain, print the held-out figures and save the folder."""
    args = parse_args(argv)
    steps = dict(vae=args.vae_steps, unet=args.unet_steps, adapter=args.adapter_steps)
    start = time.perf_counter()
    random_metrics = evaluate(_random_stack(args.seed, args.config), args.seed)
    stack = pretrain(args.seed, steps, args.config)
    metrics = evaluate(stack, args.seed)
    print(f'[pretrain] held-out figures (photo {HELD_OUT_IMAGE!r}), random init -> pretrained:')
    for key, value in metrics.items():
        print(f'[pretrain]   {key:<20} {random_metrics[key]:8.4f} -> {value:8.4f}')
    command = ' '.join(['python', 'tools/pretrain_tiny_base.py', '--out', args.out,
                        '--seed', str(args.seed)]
                       + [f'--{k}-steps {v}' for k, v in steps.items() if v != DEFAULT_STEPS[k]])
    save_base(stack, args.out, command, args.seed, steps, metrics)
    print(f'[pretrain] saved {args.out} in {time.perf_counter() - start:.0f} s total')


def _random_stack(seed: int, config: str) -> Dict[str, Any]:
    """The untrained stack of the same seed (the baseline of the printed figures)."""
    torch.manual_seed(seed)
    stack = build_tiny_stack(config)
    stack['vae'].eval()
    return stack


if __name__ == '__main__':
    sys.exit(main())
