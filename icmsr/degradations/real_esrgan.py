"""Batched, seedable Real-ESRGAN second-order degradation (GT -> LQ) on any device."""
import random
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D

from icmsr.registry import MODELS
from .kernels import KERNEL_TYPES, sample_batch_kernels
from .seeding import borrowed_global_rngs, draw_seed

_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
_RESIZE_MODES = ('area', 'bilinear', 'bicubic')

#: First-stage options (OSEDiff's ``params_realesrgan.yml``).
STAGE1_DEFAULTS: Dict[str, Any] = dict(
    kernel_list=KERNEL_TYPES, kernel_prob=_KERNEL_PROB, blur_sigma=(0.2, 3.0),
    betag_range=(0.5, 4.0), betap_range=(1.0, 2.0), sinc_prob=0.1,
    resize_prob=(0.2, 0.7, 0.1), resize_range=(0.15, 1.5), gaussian_noise_prob=0.5,
    noise_range=(1.0, 30.0), poisson_scale_range=(0.05, 3.0), gray_noise_prob=0.4,
    jpeg_range=(30.0, 95.0))
#: Second-stage options; ``blur_prob`` is the probability of the second blur.
STAGE2_DEFAULTS: Dict[str, Any] = dict(
    STAGE1_DEFAULTS, blur_prob=0.8, blur_sigma=(0.2, 1.5), resize_prob=(0.3, 0.4, 0.3),
    resize_range=(0.3, 1.2), noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5))
#: BasicSR's unsharp-mask settings.
USM_DEFAULTS: Dict[str, Any] = dict(weight=0.5, threshold=10.0, radius=50)


def _stage_options(name: str, given: Optional[Dict[str, Any]],
                   defaults: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults updated by ``given``, with an error naming ``degradation.<name>.<key>``."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise KeyError(f'degradation.{name}: unknown keys {unknown}; use {sorted(defaults)}.')
    opts = dict(defaults, **given)
    if 'kernel_list' in opts:
        bad = set(opts['kernel_list']) - set(KERNEL_TYPES)
        if bad or len(opts['kernel_list']) != len(opts['kernel_prob']):
            raise ValueError(
                f'degradation.{name}.kernel_list={list(opts["kernel_list"])} must name kernels '
                f'from {KERNEL_TYPES} and have one probability each (got '
                f'{len(opts["kernel_prob"])}).')
    if 'resize_prob' in opts and len(opts['resize_prob']) != 3:
        raise ValueError(f'degradation.{name}.resize_prob must give (up, down, keep) '
                         f'probabilities, got {opts["resize_prob"]}.')
    return opts


def _split_stage(opts: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(kernel options, resize/noise/JPEG options) of one stage, as the pipeline reads them."""
    kernel = dict(kernel_list=tuple(opts['kernel_list']), kernel_prob=tuple(opts['kernel_prob']),
                  sigma_range=tuple(opts['blur_sigma']), betag_range=tuple(opts['betag_range']),
                  betap_range=tuple(opts['betap_range']), sinc_prob=float(opts['sinc_prob']))
    rest = dict(resize_prob=tuple(opts['resize_prob']), resize_range=tuple(opts['resize_range']),
                gaussian_noise_prob=opts['gaussian_noise_prob'],
                noise_range=tuple(opts['noise_range']),
                poisson_scale_range=tuple(opts['poisson_scale_range']),
                gray_noise_prob=opts['gray_noise_prob'], jpeg_range=tuple(opts['jpeg_range']))
    return kernel, rest


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
        stage1: First-stage options (defaults :data:`STAGE1_DEFAULTS`): blur kernel
            types ``kernel_list``/``kernel_prob``, ``blur_sigma``, ``betag_range``,
            ``betap_range``, ``sinc_prob``; ``resize_prob`` (up, down, keep) and
            ``resize_range`` (relative to the input size); ``gaussian_noise_prob``
            (else Poisson), ``noise_range`` (8-bit sigma), ``poisson_scale_range``,
            ``gray_noise_prob``; ``jpeg_range``.
        stage2: The same for the second stage (defaults :data:`STAGE2_DEFAULTS`),
            plus ``blur_prob`` (probability of the second blur); its resize range
            is relative to ``H / scale``.
        kernel_sizes: Odd blur kernel sizes (all stages); kernels are padded
            to the largest.
        final_sinc_prob: Per-image probability of the final sinc filter.
        resize_modes: Interpolation modes drawn for every resize.
        usm: Unsharp-mask the GT first with BasicSR's ``USMSharp``
            (``dict(weight=0.5, threshold=10, radius=50)``); the degradation then starts
            from the sharpened GT and ``'gt'`` in the output is the sharpened one. None
            (default): no USM, as OSEDiff trains. Its 51x51 Gaussian is a direct
            convolution: 26 s per 4 x 512^2 batch on one CPU core (1.1 s through an FFT),
            cheap on a GPU.
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
                 stage1: Optional[Dict[str, Any]] = None,
                 stage2: Optional[Dict[str, Any]] = None,
                 kernel_sizes: Sequence[int] = (7, 9, 11, 13, 15, 17, 19, 21),
                 final_sinc_prob: float = 0.8,
                 resize_modes: Sequence[str] = _RESIZE_MODES,
                 usm: Optional[Dict[str, Any]] = None,
                 resize_back: bool = True,
                 resize_back_modes: Sequence[str] = _RESIZE_MODES,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes or any(k % 2 == 0 or k < 1 for k in kernel_sizes):
            raise ValueError(f'kernel_sizes must be positive odd ints, got {kernel_sizes}.')
        st1 = _stage_options('stage1', stage1, STAGE1_DEFAULTS)
        st2 = _stage_options('stage2', stage2, STAGE2_DEFAULTS)
        usm_opts = None if usm is None else _stage_options('usm', usm, USM_DEFAULTS)
        if scale < 1:
            raise ValueError(f'scale must be >= 1, got {scale}.')
        self.scale = int(scale)
        self.kernel_sizes = kernel_sizes
        self.stage1_kernel, self.stage1 = _split_stage(st1)
        self.stage2_kernel, self.stage2 = _split_stage(st2)
        self.second_blur_prob = float(st2['blur_prob'])
        self.final_sinc_prob = float(final_sinc_prob)
        self.resize_modes = tuple(resize_modes)
        self.use_usm = usm_opts is not None
        usm_opts = usm_opts or USM_DEFAULTS
        self.usm_weight = float(usm_opts['weight'])
        self.usm_threshold = float(usm_opts['threshold'])
        self.usm_radius = int(usm_opts['radius'])
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
        """BasicSR's Gaussian or Poisson noise with per-image strength."""
        if np.random.uniform() < stage['gaussian_noise_prob']:
            return random_add_gaussian_noise_pt(
                out, sigma_range=stage['noise_range'], clip=True, rounds=False,
                gray_prob=stage['gray_noise_prob'])
        return random_add_poisson_noise_pt(out, scale_range=stage['poisson_scale_range'],
                                           gray_prob=stage['gray_noise_prob'], clip=True,
                                           rounds=False)

    def _usm(self, img: torch.Tensor) -> torch.Tensor:
        """BasicSR's unsharp masking of the GT (its reflect padding needs the image larger)."""
        pad = (self.usm_radius | 1) // 2  # USMSharp makes the window odd
        if min(img.shape[-2:]) <= pad:
            raise ValueError(
                f'USM with radius {self.usm_radius} needs images larger than {pad} px, got '
                f'{tuple(img.shape[-2:])}; lower usm.radius or drop usm from the degradation.')
        usm = USMSharp(self.usm_radius).to(img.device)
        return usm(img, weight=self.usm_weight, threshold=self.usm_threshold)

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
            ``usm`` is set), ``'lq'`` float32 ``(B, 3, H/scale, W/scale)`` in
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
            img = self._usm(img)

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
