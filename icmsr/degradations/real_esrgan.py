"""Batched, seedable Real-ESRGAN second-order degradation (GT -> LQ) on any device."""
import random
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from basicsr.data.degradations import random_add_gaussian_noise_pt
from basicsr.utils import DiffJPEG
from basicsr.utils.img_process_util import filter2D

from icmsr.registry import MODELS
from .kernels import KERNEL_TYPES, sample_batch_kernels
from .noise import random_add_poisson_noise
from .seeding import borrowed_global_rngs, draw_seed
from .usm import usm_sharpen

_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
_RESIZE_MODES = ('area', 'bilinear', 'bicubic')


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp to ``[0, 1]`` and round to multiples of 1/255 (an 8-bit image).

    Args:
        x: Float tensor.

    Returns:
        ``clamp(round(255 x), 0, 255) / 255``.
    """
    return torch.clamp((x * 255.0).round(), 0, 255) / 255.0


@MODELS.register_module()
class RealESRGANDegradation(nn.Module):
    """Real-ESRGAN's second-order degradation of a GT batch, as in BasicSR's training.

    Pipeline (BasicSR ``RealESRGANModel.feed_data``; defaults are OSEDiff's
    ``params_realesrgan.yml``): blur (kernel 1) -> random resize -> Gaussian or
    Poisson noise -> JPEG; then blur (kernel 2, with ``second_blur_prob``) ->
    random resize to ``H/scale * s`` -> noise -> in random order either
    [resize to ``H/scale`` + final sinc, JPEG] or [JPEG, resize + final sinc];
    clamp and round to 8 bit.

    Randomness follows BasicSR's semantics: the three kernels are sampled per
    image (as BasicSR's dataset does), while resize factors/modes, the noise
    type and the stage order are drawn once per batch and noise sigma/scale,
    gray-noise flags and JPEG qualities per image (as ``feed_data`` does). All
    draws derive from one seed taken from ``generator`` (or the module's own
    generator), so the same seed gives bitwise the same LQ on the same device
    and backend; the caller's global RNG states are left untouched.

    Args:
        scale: Downscaling factor; ``H`` and ``W`` must be divisible by it.
        kernel_sizes: Odd blur kernel sizes (all stages); kernels are padded
            to the largest.
        kernel_list, kernel_prob: Stage-1 kernel types and their probabilities.
        blur_sigma, betag_range, betap_range, sinc_prob: Stage-1 kernel ranges
            and the probability of a sinc kernel.
        resize_prob: Probabilities of (up, down, keep) in stage 1.
        resize_range: Stage-1 scale range (relative to the input size).
        gaussian_noise_prob: Probability of Gaussian (else Poisson) noise.
        noise_range: Gaussian sigma range in 8-bit units.
        poisson_scale_range: Poisson noise scale range.
        gray_noise_prob: Per-image probability of gray (channel-shared) noise.
        jpeg_range: Stage-1 JPEG quality range.
        second_blur_prob: Probability of the stage-2 blur.
        kernel_list2, kernel_prob2, blur_sigma2, betag_range2, betap_range2,
            sinc_prob2: Stage-2 kernel settings.
        resize_prob2, resize_range2: Stage-2 resize settings (relative to
            ``H / scale``).
        gaussian_noise_prob2, noise_range2, poisson_scale_range2,
            gray_noise_prob2, jpeg_range2: Stage-2 noise and JPEG settings.
        final_sinc_prob: Per-image probability of the final sinc filter.
        resize_modes: Interpolation modes drawn for every resize.
        use_usm: Unsharp-mask the GT first; the degradation then starts from
            the sharpened GT and ``'gt'`` in the output is the sharpened one.
        usm_weight, usm_threshold, usm_radius: USM settings (BasicSR's).
        resize_back: Also return ``'lq_up'``, the LQ resized back to ``(H, W)``
            with a mode drawn from ``resize_back_modes`` (as OSEDiff's
            training does), clamped and rounded to 8 bit.
        resize_back_modes: Modes for ``resize_back``.
        seed: Seed of the module's own generator, used when ``forward`` gets
            no ``generator``. ``None`` takes ``torch.initial_seed()`` (set by
            MMEngine's ``randomness`` config). The distributed rank is added
            so ranks draw different degradations.
    """

    def __init__(self,
                 scale: int = 4,
                 kernel_sizes: Sequence[int] = (7, 9, 11, 13, 15, 17, 19, 21),
                 kernel_list: Sequence[str] = KERNEL_TYPES,
                 kernel_prob: Sequence[float] = _KERNEL_PROB,
                 blur_sigma: Sequence[float] = (0.2, 3.0),
                 betag_range: Sequence[float] = (0.5, 4.0),
                 betap_range: Sequence[float] = (1.0, 2.0),
                 sinc_prob: float = 0.1,
                 resize_prob: Sequence[float] = (0.2, 0.7, 0.1),
                 resize_range: Sequence[float] = (0.15, 1.5),
                 gaussian_noise_prob: float = 0.5,
                 noise_range: Sequence[float] = (1.0, 30.0),
                 poisson_scale_range: Sequence[float] = (0.05, 3.0),
                 gray_noise_prob: float = 0.4,
                 jpeg_range: Sequence[float] = (30.0, 95.0),
                 second_blur_prob: float = 0.8,
                 kernel_list2: Sequence[str] = KERNEL_TYPES,
                 kernel_prob2: Sequence[float] = _KERNEL_PROB,
                 blur_sigma2: Sequence[float] = (0.2, 1.5),
                 betag_range2: Sequence[float] = (0.5, 4.0),
                 betap_range2: Sequence[float] = (1.0, 2.0),
                 sinc_prob2: float = 0.1,
                 resize_prob2: Sequence[float] = (0.3, 0.4, 0.3),
                 resize_range2: Sequence[float] = (0.3, 1.2),
                 gaussian_noise_prob2: float = 0.5,
                 noise_range2: Sequence[float] = (1.0, 25.0),
                 poisson_scale_range2: Sequence[float] = (0.05, 2.5),
                 gray_noise_prob2: float = 0.4,
                 jpeg_range2: Sequence[float] = (30.0, 95.0),
                 final_sinc_prob: float = 0.8,
                 resize_modes: Sequence[str] = _RESIZE_MODES,
                 use_usm: bool = False,
                 usm_weight: float = 0.5,
                 usm_threshold: float = 10.0,
                 usm_radius: int = 50,
                 resize_back: bool = True,
                 resize_back_modes: Sequence[str] = _RESIZE_MODES,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes or any(k % 2 == 0 or k < 1 for k in kernel_sizes):
            raise ValueError(f'kernel_sizes must be positive odd ints, got {kernel_sizes}.')
        for name, lst, prob in (('kernel_list', kernel_list, kernel_prob),
                                ('kernel_list2', kernel_list2, kernel_prob2)):
            unknown = set(lst) - set(KERNEL_TYPES)
            if unknown or len(lst) != len(prob):
                raise ValueError(
                    f'{name}={list(lst)} must name kernels from {KERNEL_TYPES} and have '
                    f'one probability each (got {len(prob)}).')
        for name, prob in (('resize_prob', resize_prob), ('resize_prob2', resize_prob2)):
            if len(prob) != 3:
                raise ValueError(f'{name} must give (up, down, keep) probabilities, got {prob}.')
        if scale < 1:
            raise ValueError(f'scale must be >= 1, got {scale}.')
        self.scale = int(scale)
        self.kernel_sizes = kernel_sizes
        self.stage1_kernel = dict(
            kernel_list=tuple(kernel_list), kernel_prob=tuple(kernel_prob),
            sigma_range=tuple(blur_sigma), betag_range=tuple(betag_range),
            betap_range=tuple(betap_range), sinc_prob=float(sinc_prob))
        self.stage2_kernel = dict(
            kernel_list=tuple(kernel_list2), kernel_prob=tuple(kernel_prob2),
            sigma_range=tuple(blur_sigma2), betag_range=tuple(betag_range2),
            betap_range=tuple(betap_range2), sinc_prob=float(sinc_prob2))
        self.stage1 = dict(
            resize_prob=tuple(resize_prob), resize_range=tuple(resize_range),
            gaussian_noise_prob=gaussian_noise_prob, noise_range=tuple(noise_range),
            poisson_scale_range=tuple(poisson_scale_range),
            gray_noise_prob=gray_noise_prob, jpeg_range=tuple(jpeg_range))
        self.stage2 = dict(
            resize_prob=tuple(resize_prob2), resize_range=tuple(resize_range2),
            gaussian_noise_prob=gaussian_noise_prob2, noise_range=tuple(noise_range2),
            poisson_scale_range=tuple(poisson_scale_range2),
            gray_noise_prob=gray_noise_prob2, jpeg_range=tuple(jpeg_range2))
        self.second_blur_prob = float(second_blur_prob)
        self.final_sinc_prob = float(final_sinc_prob)
        self.resize_modes = tuple(resize_modes)
        self.use_usm = bool(use_usm)
        self.usm_weight = float(usm_weight)
        self.usm_threshold = float(usm_threshold)
        self.usm_radius = int(usm_radius)
        self.resize_back = bool(resize_back)
        self.resize_back_modes = tuple(resize_back_modes)
        self.seed = seed
        self._generator: Optional[torch.Generator] = None
        # Plain dict, not a submodule: DiffJPEG holds its tables as nn.Parameters,
        # which must not reach optimizers or checkpoints of the model owning us.
        self._jpegers: Dict[str, DiffJPEG] = {}

    # ------------------------------------------------------------------ helpers
    def _own_generator(self) -> torch.Generator:
        """The module's generator, created on first use (seed + distributed rank)."""
        if self._generator is None:
            seed = self.seed if self.seed is not None else torch.initial_seed()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                seed += torch.distributed.get_rank()
            self._generator = torch.Generator().manual_seed(int(seed) % 2**63)
        return self._generator

    def _jpeger(self, device: torch.device) -> DiffJPEG:
        """A non-differentiable DiffJPEG living on ``device`` (cached)."""
        key = str(device)
        if key not in self._jpegers:
            jpeger = DiffJPEG(differentiable=False).to(device)
            self._jpegers[key] = jpeger.requires_grad_(False).eval()
        return self._jpegers[key]

    def _check_input(self, gt: torch.Tensor) -> None:
        """Raise a clear error for inputs the pipeline cannot process."""
        if not isinstance(gt, torch.Tensor) or gt.ndim != 4 or gt.shape[1] != 3:
            shape = tuple(gt.shape) if isinstance(gt, torch.Tensor) else type(gt).__name__
            raise ValueError(f'RealESRGANDegradation expects gt of shape (B, 3, H, W), got {shape}.')
        if not gt.is_floating_point():
            raise TypeError(f'gt must be a float tensor in [0, 1], got {gt.dtype}; '
                            'divide uint8 images by 255 first.')
        h, w = gt.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(f'gt size {(h, w)} must be divisible by scale={self.scale} '
                             'so that LQ and GT stay aligned; crop it first.')
        pad = max(self.kernel_sizes) // 2
        side = min(h, w)
        smallest = {
            'stage-1 blur': side,
            'stage-2 blur after resize_range[0]': int(side * self.stage1['resize_range'][0]),
            'final sinc filter at H/scale': side // self.scale,
        }
        for where, size in smallest.items():
            if size <= pad:
                raise ValueError(
                    f'gt {(h, w)} is too small: the {where} sees {size} px, but '
                    f'{max(self.kernel_sizes)}x{max(self.kernel_sizes)} kernels need > {pad} px. '
                    'Use larger crops or smaller kernel_sizes/resize ranges.')
        if int(side / self.scale * self.stage2['resize_range'][0]) < 1:
            raise ValueError(f'gt {(h, w)} is too small for resize_range2={self.stage2["resize_range"]}.')

    @staticmethod
    def _random_scale(resize_prob: Tuple[float, ...], resize_range: Tuple[float, ...]) -> float:
        """Draw up/down/keep and the factor exactly as BasicSR does."""
        updown = random.choices(['up', 'down', 'keep'], resize_prob)[0]
        if updown == 'up':
            return float(np.random.uniform(1, resize_range[1]))
        if updown == 'down':
            return float(np.random.uniform(resize_range[0], 1))
        return 1.0

    @staticmethod
    def _add_noise(out: torch.Tensor, stage: Dict) -> torch.Tensor:
        """Gaussian or Poisson noise with per-image strength, as BasicSR draws it.

        Gaussian noise is BasicSR's function; Poisson noise is our bitwise
        equivalent of it that counts levels with a histogram (much faster).
        """
        if np.random.uniform() < stage['gaussian_noise_prob']:
            return random_add_gaussian_noise_pt(
                out, sigma_range=stage['noise_range'], clip=True, rounds=False,
                gray_prob=stage['gray_noise_prob'])
        return random_add_poisson_noise(out, stage['poisson_scale_range'], stage['gray_noise_prob'])

    def _jpeg(self, out: torch.Tensor, quality_range: Tuple[float, ...]) -> torch.Tensor:
        """JPEG with a per-image quality; the output is made contiguous for filter2D."""
        quality = out.new_zeros(out.size(0)).uniform_(*quality_range)
        out = torch.clamp(out, 0, 1)  # DiffJPEG misbehaves outside [0, 1]
        return self._jpeger(out.device)(out, quality=quality).contiguous()

    def _resize_and_sinc(self, out: torch.Tensor, size: Tuple[int, int],
                         sinc: torch.Tensor) -> torch.Tensor:
        """Resize to the LQ size with a random mode, then the final sinc filter."""
        mode = random.choice(self.resize_modes)
        out = F.interpolate(out, size=size, mode=mode)
        return filter2D(out, sinc)

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(self, gt: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """Degrade a GT batch.

        Args:
            gt: float ``(B, 3, H, W)`` in ``[0, 1]`` on any device; ``H, W``
                divisible by ``scale``.
            generator: Source of all randomness for this call (one seed is
                drawn from it). ``None`` uses the module's own generator.

        Returns:
            dict with ``'gt'`` (the input, or its USM-sharpened version when
            ``use_usm``), ``'lq'`` float32 ``(B, 3, H/scale, W/scale)`` in
            ``[0, 1]`` on multiples of 1/255, and, when ``resize_back``,
            ``'lq_up'`` float32 ``(B, 3, H, W)``, also 8-bit quantised.
        """
        self._check_input(gt)
        seed = draw_seed(generator if generator is not None else self._own_generator())
        with borrowed_global_rngs(seed, gt.device):
            return self._degrade(gt)

    def _degrade(self, gt: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The pipeline body; all draws use the (seeded) global RNGs."""
        b, _, h, w = gt.shape
        lq_size = (h // self.scale, w // self.scale)
        kernels = sample_batch_kernels(b, self.kernel_sizes, self.stage1_kernel,
                                       self.stage2_kernel, self.final_sinc_prob)
        kernel1, kernel2, sinc = (k.to(gt.device) for k in kernels)
        img = gt.float().contiguous()
        if self.use_usm:
            img = usm_sharpen(img, self.usm_weight, self.usm_threshold, self.usm_radius)

        # Stage 1: blur, resize relative to the input, noise, JPEG.
        out = filter2D(img, kernel1)
        factor = self._random_scale(self.stage1['resize_prob'], self.stage1['resize_range'])
        out = F.interpolate(out, scale_factor=factor, mode=random.choice(self.resize_modes))
        out = self._add_noise(out, self.stage1)
        out = self._jpeg(out, self.stage1['jpeg_range'])

        # Stage 2: blur, resize relative to the LQ size, noise.
        if np.random.uniform() < self.second_blur_prob:
            out = filter2D(out, kernel2)
        factor = self._random_scale(self.stage2['resize_prob'], self.stage2['resize_range'])
        size = (int(h / self.scale * factor), int(w / self.scale * factor))
        out = F.interpolate(out, size=size, mode=random.choice(self.resize_modes))
        out = self._add_noise(out, self.stage2)

        # [resize to LQ size + sinc] and JPEG in random order; other orders
        # give twisted lines according to Real-ESRGAN.
        if np.random.uniform() < 0.5:
            out = self._resize_and_sinc(out, lq_size, sinc)
            out = self._jpeg(out, self.stage2['jpeg_range'])
        else:
            out = self._jpeg(out, self.stage2['jpeg_range'])
            out = self._resize_and_sinc(out, lq_size, sinc)

        lq = quantize_8bit(out)
        result = dict(gt=img if self.use_usm else gt, lq=lq)
        if self.resize_back:
            mode = random.choice(self.resize_back_modes)
            result['lq_up'] = quantize_8bit(F.interpolate(lq, size=(h, w), mode=mode))
        return result

    def extra_repr(self) -> str:
        """Summary shown by ``print(module)``."""
        return (f'scale={self.scale}, use_usm={self.use_usm}, resize_back={self.resize_back}, '
                f'kernel_sizes={self.kernel_sizes}')
