"""OneStepSR: the one-step diffusion super-resolution model that every inference path runs.

The trained model of OSEDiff and ICM-SR is the same at inference: a VAE encoder
with LoRA, one UNet step with LoRA at t=999, the x0 formula and the frozen VAE
decoder, conditioned on a text prompt. This class is that model and nothing
more; :class:`~icmsr.models.icmsr.ICMSR` extends it with what only training
needs (degradation, teacher condition, regulariser, auxiliary model, losses),
the way MMagic's ``RealESRGAN`` extends ``SRGAN``. So validation, testing,
``icmsr.apis``, ``tools/infer.py``, exports and hooks all run one method,
:meth:`OneStepSR.super_resolve`, and building for inference from any training
config builds only this class.
"""
import contextlib
import dataclasses
import inspect
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F
import torch.nn as nn
from mmengine.model import BaseModel, is_model_wrapper

from icmsr.registry import MODELS, build_or_use
from icmsr.structures import SRDataSample
from icmsr.utils.color_correction import COLOR_FIX_MODES, color_fix as apply_color_fix
from icmsr.utils.tile_context import WholeImageContext
from icmsr.utils.tile_memory import AUTO, TileCost, default_budget, largest_tile, measure_cost
from icmsr.utils.tiling import VAE_FACTOR, TileSettings, pad_to_multiple, tiled_apply
from .base_fingerprint import (base_fingerprint, check_fingerprint, describe_source,
                               fingerprint_from_state, fingerprint_to_tensor)
from .lora import LoRARoles

_TEST_KEYS = ('tile_size', 'tile_overlap', 'vae_tile_size', 'vae_overlap', 'blend', 'tile_batch',
              'norm_stats', 'attention_memory', 'max_memory')


def resize_to(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic resize (antialiased when shrinking), clamped to ``[0, 1]``.

    Args:
        img: ``(B, C, h, w)``.
        size: ``(H, W)``.

    Returns:
        ``(B, C, H, W)``; the input itself when already that size.
    """
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    shrink = size[0] < img.shape[-2]
    return F.interpolate(img, size=tuple(size), mode='bicubic', align_corners=False,
                         antialias=shrink).clamp_(0, 1)


@MODELS.register_module()
class OneStepSR(BaseModel):
    """One-step diffusion SR: generator + prompt encoder, and the one super-resolution path.

    Args:
        unet: UNet config (``type='SDUNet'``) or module; frozen.
        vae: VAE config or module; frozen (the generator adds encoder LoRA).
        text_encoder: text encoder config or module; frozen.
        tokenizer: tokenizer config or object.
        scheduler: scheduler config or object (the x0 formula reads its schedule).
        generator: extra :class:`OneStepGenerator` arguments (``type`` optional).
        text: extra :class:`PromptEncoder` arguments (``type`` optional).
        scale: upscaling factor (LQ -> SR).
        test_cfg: inference settings: ``tile_size``, ``tile_overlap``, ``vae_tile_size``,
            ``vae_overlap``, ``blend``, ``tile_batch``, ``norm_stats``, ``attention_memory``,
            ``max_memory`` (see :class:`~icmsr.utils.tiling.TileSettings`),
            ``color_fix`` (``'none'``, ``'adain'``, ``'wavelet'``) and ``pad_multiple``.
        base_seed: seed of every randomly initialised frozen weight (``from_config``
            components: tiny configs, benchmarks), so a config always rebuilds the
            base its LoRA was trained on. None: torch's global RNG.
        base_check: what loading trained weights onto another base does: ``'error'``
            (default) or ``'warn'`` (a deliberate transfer).
        data_preprocessor: ``SRDataPreprocessor`` config.
        init_cfg: MMEngine init config (unused: weights come from the builders).
    """

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 generator: Optional[Dict[str, Any]] = None, text: Optional[Dict[str, Any]] = None,
                 scale: int = 4, test_cfg: Optional[Dict[str, Any]] = None,
                 base_seed: Optional[int] = 0, base_check: str = 'error',
                 data_preprocessor: Optional[Dict[str, Any]] = None,
                 init_cfg: Optional[Dict[str, Any]] = None) -> None:
        # Built from this package's registry, so the model builds outside the Runner's scope too.
        if not isinstance(data_preprocessor, nn.Module):
            data_preprocessor = build_or_use(dict(data_preprocessor or {}), type='SRDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.scale = int(scale)
        self.tiles, self.color_fix, self.pad_multiple = self._test_settings(test_cfg)
        self.base_seed = base_seed
        self.base_check = base_check
        self.roles = LoRARoles()
        # Measured per-pixel costs (VAE, UNet) of an automatic tile size, by (device, dtype).
        self.tile_costs: Dict[Tuple[str, str], Tuple[TileCost, TileCost]] = {}
        with self.seeded_base():
            self.scheduler = build_or_use(scheduler)
            self.unet = build_or_use(unet)
            vae_module = build_or_use(vae)
            self.text = build_or_use(dict(text or {}), type='PromptEncoder',
                                     text_encoder=text_encoder, tokenizer=tokenizer)
        self.unet.requires_grad_(False)
        self.base_fingerprint = base_fingerprint(
            dict(unet=self.unet, vae=vae_module, text_encoder=self.text.text_encoder),
            dict(unet=describe_source(unet, base_seed), vae=describe_source(vae, base_seed),
                 text_encoder=describe_source(text_encoder, base_seed)))
        self.generator = build_or_use(dict(generator or {}), type='OneStepGenerator',
                                      vae=vae_module, unet=self.unet, scheduler=self.scheduler,
                                      roles=self.roles)
        self.register_state_dict_post_hook(OneStepSR._keep_trainable_state)
        self.register_load_state_dict_post_hook(OneStepSR._ignore_missing_frozen)

    # ----------------------------------------------------------------- building
    @staticmethod
    def _test_settings(test_cfg: Optional[Dict[str, Any]]) -> Tuple[TileSettings, str, int]:
        cfg = dict(test_cfg or {})
        known = set(_TEST_KEYS) | {'color_fix', 'pad_multiple'}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise KeyError(f'model.test_cfg: unknown keys {unknown}; use {sorted(known)}.')
        tiles = TileSettings(**{k: cfg[k] for k in _TEST_KEYS if k in cfg})
        try:
            tiles.validate()
        except ValueError as err:
            raise ValueError(f'model.test_cfg.{err}') from None
        mode = cfg.get('color_fix', 'none')
        if mode not in COLOR_FIX_MODES:
            raise ValueError(f'model.test_cfg.color_fix={mode!r}; choose one of {COLOR_FIX_MODES}.')
        pad = int(cfg.get('pad_multiple', 64))
        if pad % VAE_FACTOR:
            raise ValueError(f'model.test_cfg.pad_multiple={pad} must be a multiple of {VAE_FACTOR}.')
        return tiles, mode, pad

    @contextlib.contextmanager
    def seeded_base(self) -> Iterator[None]:
        """Draw random frozen weights from ``base_seed``, leaving torch's global RNG as it was.

        Yields:
            Nothing.
        """
        if self.base_seed is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.base_seed))
            yield

    @classmethod
    def inference_config(cls, model_cfg: Dict[str, Any]) -> Dict[str, Any]:
        """The ``OneStepSR`` part of any model config (a training config's extras dropped).

        Args:
            model_cfg: an ``OneStepSR`` or ``ICMSR`` (or subclass) model config.

        Returns:
            A config of this class: the teacher condition, regulariser, auxiliary
            model, losses and training degradation are not part of it.
        """
        accepted = set(inspect.signature(OneStepSR.__init__).parameters) - {'self'}
        missing = [k for k in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler')
                   if k not in model_cfg]
        if missing:
            raise KeyError(f'The model config lacks {missing}: it is not a one-step SR model config '
                           '(see configs/_base_/models/icmsr.py).')
        cfg = {k: v for k, v in dict(model_cfg).items() if k in accepted}
        cfg['type'] = 'OneStepSR'
        cfg.pop('data_preprocessor', None)  # the training preprocessor degrades; inference only stacks
        return cfg

    # -------------------------------------------------------------- checkpoints
    def trainable_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Parameters of each trained part, keyed like the ``OptimWrapperDict``.

        Returns:
            ``{'generator': [...]}`` (subclasses add their parts).
        """
        return {'generator': self._unwrapped('generator').trainable_parameters()}

    def _unwrapped(self, name: str) -> nn.Module:
        # Under a per-child DDP wrapper the component sits in ``.module``.
        child = getattr(self, name)
        return child.module if is_model_wrapper(child) else child

    def trainable_state_keys(self) -> Set[str]:
        """State-dict keys of the trained tensors: all a checkpoint holds, with the base fingerprint."""
        keys = set()
        for name, params in self.trainable_groups().items():
            ids = {id(p) for p in params}
            keys.update(f'{name}.{key}' for key, p in self._unwrapped(name).named_parameters()
                        if id(p) in ids)
        return keys

    @staticmethod
    def _keep_trainable_state(module: 'OneStepSR', state: Dict[str, Any], prefix: str,
                              local_metadata: Any) -> None:
        # Frozen weights come from the pretrained builders: checkpoints hold the trained
        # tensors and the extra state (the base fingerprint) only. Runner.save_checkpoint
        # calls plain ``state_dict()``, so under per-child DDP the keys of a wrapped part
        # read ``generator.module.*``; they are stored as ``generator.*`` so that single- and
        # multi-GPU checkpoints are interchangeable (MMEngine's loader unwraps on load).
        keep = module.trainable_state_keys() | {'_extra_state'}
        wrapped = [name for name in module.trainable_groups()
                   if is_model_wrapper(getattr(module, name))]
        for key in [k for k in state if k.startswith(prefix)]:
            name = key[len(prefix):]
            for part in wrapped:
                if name.startswith(part + '.module.'):
                    name = part + name[len(part) + len('.module'):]
            value = state.pop(key)
            if name in keep:
                state[prefix + name] = value

    @staticmethod
    def _ignore_missing_frozen(module: 'OneStepSR', incompatible: Any) -> None:
        # Loading is strict about trained tensors only.
        keep = module.trainable_state_keys()
        for key in [k for k in incompatible.missing_keys if k not in keep]:
            incompatible.missing_keys.remove(key)

    def get_extra_state(self) -> torch.Tensor:
        """Saved with the state dict: the fingerprint of the frozen base, as JSON bytes in a tensor."""
        return fingerprint_to_tensor(self.base_fingerprint)

    def set_extra_state(self, state: Any) -> None:
        """Check that trained weights being loaded were trained on this model's base.

        Args:
            state: what :meth:`get_extra_state` saved.

        Raises:
            BaseMismatchError: on another base, unless ``base_check='warn'``.
        """
        check_fingerprint(fingerprint_from_state(state), self.base_fingerprint, 'The checkpoint',
                          self.base_check)

    # ---------------------------------------------------------------- inference
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings of prompt strings (the configured suffix added to non-empty ones).

        Args:
            prompts: one string per image.

        Returns:
            ``(B, 77, D)`` embeddings.
        """
        return self.text.encode_prompts(prompts)

    @torch.no_grad()
    def super_resolve(self, lq: torch.Tensor, prompts: Optional[Sequence[str]] = None, *,
                      prompt_embeds: Optional[torch.Tensor] = None,
                      output_size: Optional[Sequence[int]] = None,
                      tiles: Optional[TileSettings] = None, color_fix: Optional[str] = None,
                      progress: Optional[Callable[[str, int, int], None]] = None) -> torch.Tensor:
        """Super-resolve a batch of LQ images: the only super-resolution path of the toolkit.

        The LQ is resized (bicubic) to the output size, padded to ``pad_multiple``
        (reflection), run through the VAE encoder, the one-step UNet and the VAE
        decoder in overlapping tiles (an image that fits one tile runs untiled),
        cropped back and optionally colour-corrected toward the LQ.

        Args:
            lq: ``(B, 3, h, w)`` or ``(3, h, w)`` in ``[0, 1]``, any size.
            prompts: one prompt per image (None: empty prompts).
            prompt_embeds: ready text embeddings instead of ``prompts``.
            output_size: ``(H, W)`` of the result (default ``(h, w) * scale``).
            tiles: tiling (default: ``test_cfg``).
            color_fix: colour correction (default: ``test_cfg.color_fix``).
            progress: called as ``progress(stage, done, total)`` after each tile of
                the ``'encode'``, ``'denoise'`` and ``'decode'`` stages.

        Returns:
            ``(B, 3, H, W)`` float32 in ``[0, 1]`` on the model's device.
        """
        if lq.dim() == 3:
            lq = lq.unsqueeze(0)
        if lq.dim() != 4 or lq.shape[1] != 3:
            raise ValueError(f'super_resolve expects RGB images (B, 3, h, w), got {tuple(lq.shape)}.')
        tiles = self.tiles if tiles is None else tiles
        tiles.validate()
        mode = self.color_fix if color_fix is None else color_fix
        if mode not in COLOR_FIX_MODES:
            raise ValueError(f'color_fix={mode!r}; choose one of {COLOR_FIX_MODES}.')
        device = next(self.generator.parameters()).device
        lq = lq.to(device, torch.float32)
        out_h, out_w = (tuple(output_size) if output_size is not None
                        else (lq.shape[-2] * self.scale, lq.shape[-1] * self.scale))
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompts(list(prompts) if prompts is not None
                                                else [''] * lq.shape[0])
        # In place where possible: image-sized buffers are the only ones that grow with the photo.
        x = resize_to(lq, (out_h, out_w))
        x = (x.clone() if x is lq else x).clamp_(0, 1).mul_(2).sub_(1)
        x = pad_to_multiple(x, self.pad_multiple)

        def stage(name: str) -> Optional[Callable[[int, int], None]]:
            return None if progress is None else (lambda done, total: progress(name, done, total))

        def shared(module: nn.Module) -> Optional[WholeImageContext]:
            return (WholeImageContext([module], tiles.attention_memory * 2 ** 30)
                    if tiles.norm_stats == 'image' else None)

        def denoise(z: torch.Tensor) -> torch.Tensor:
            # Stacked tiles (tile_batch) are tile-major: repeat the prompts alongside.
            embeds = prompt_embeds.repeat(z.shape[0] // prompt_embeds.shape[0], 1, 1)
            return gen.denoise(z, embeds)

        gen = self._unwrapped('generator')  # no-grad stages bypass a DDP wrapper
        vae = gen.vae
        if AUTO in (tiles.tile_size, tiles.vae_tile_size):
            tiles = self._auto_tiles(tiles, x, gen, prompt_embeds[:1])
        z_l = tiled_apply(x, gen.encode, tiles.vae_tile_size, tiles.vae_overlap,
                          scale=1 / VAE_FACTOR, mode=tiles.blend_mode, progress=stage('encode'),
                          tile_batch=tiles.tile_batch, norms=shared(vae.encoder))
        del x
        z0 = tiled_apply(z_l, denoise, tiles.tile_size // VAE_FACTOR,
                         tiles.tile_overlap // VAE_FACTOR, scale=1, mode=tiles.blend_mode,
                         progress=stage('denoise'), tile_batch=tiles.tile_batch,
                         norms=shared(gen.unet))
        del z_l
        img = tiled_apply(z0, gen.decode, tiles.vae_tile_size // VAE_FACTOR,
                          tiles.vae_overlap // VAE_FACTOR, scale=VAE_FACTOR, mode=tiles.blend_mode,
                          progress=stage('decode'), tile_batch=tiles.tile_batch,
                          norms=shared(vae.decoder))
        del z0
        sr = img.float()[..., :out_h, :out_w].add_(1).div_(2).clamp_(0, 1)
        return apply_color_fix(sr, lq, mode)

    def _auto_tiles(self, tiles: TileSettings, x: torch.Tensor, gen: nn.Module,
                    embeds: torch.Tensor) -> TileSettings:
        """``tiles`` with each ``'auto'`` size replaced by the largest that fits the budget.

        The per-pixel costs of the VAE (the larger terms of the encoder and the decoder) and of
        the UNet are measured once per device and dtype on a 128 px probe tile and cached.
        """
        dtype = next(gen.parameters()).dtype
        key = (str(x.device), str(dtype))
        if key not in self.tile_costs:
            probe, pixels = x[:1, :, :128, :128], 128 * 128
            probe = F.pad(probe, (0, 128 - probe.shape[-1], 0, 128 - probe.shape[-2]))
            latent = []
            enc = measure_cost(gen.vae.encoder, lambda: latent.append(gen.encode(probe)), pixels)
            dec = measure_cost(gen.vae.decoder, lambda: gen.decode(latent[0]), pixels)
            unet = measure_cost(gen.unet, lambda: gen.denoise(latent[0], embeds), pixels)
            vae = TileCost(max(enc.linear, dec.linear), max(enc.quadratic, dec.quadratic))
            self.tile_costs[key] = (vae, unet)
        vae, unet = self.tile_costs[key]
        budget = (tiles.max_memory * 2 ** 30 if tiles.max_memory is not None
                  else default_budget(x.device))
        copies, (height, width) = x.shape[0] * tiles.tile_batch, x.shape[-2:]
        # Tiled with whole-image context, the kept attention keys/values share the budget.
        kept = tiles.attention_memory * 2 ** 30 if tiles.norm_stats == 'image' else 0

        def fit(cost: TileCost, overlap: int) -> int:
            tile = largest_tile(cost, height, width, overlap, budget, copies)
            whole = tile >= max(height, width)
            return tile if whole else largest_tile(cost, height, width, overlap,
                                                   max(budget - kept, 0), copies)
        sizes = {}
        if tiles.vae_tile_size == AUTO:
            sizes['vae_tile_size'] = fit(vae, tiles.vae_overlap)
        if tiles.tile_size == AUTO:
            sizes['tile_size'] = fit(unet, tiles.tile_overlap)
        return dataclasses.replace(tiles, **sizes)

    def _sr_batch(self, inputs: Dict[str, Any], data_samples: Optional[Sequence[Any]]) -> torch.Tensor:
        """Super-resolve a preprocessed batch at its GT size (``scale`` times the LQ without GT)."""
        lq, gt = inputs['lq'], inputs.get('gt')
        size = (lq.shape[-2] * self.scale, lq.shape[-1] * self.scale) if gt is None else gt.shape[-2:]
        # Prompt extractors see the LQ at the output size (as OSEDiff tags it), never the GT.
        embeds = self.text(data_samples, len(lq), images=dict(gt=None, lq=resize_to(lq, size)))
        return self.super_resolve(lq, prompt_embeds=embeds, output_size=size)

    def _predict(self, inputs: Dict[str, Any],
                 data_samples: Optional[List[Any]]) -> List[SRDataSample]:
        samples = data_samples or [SRDataSample() for _ in range(len(inputs['lq']))]
        sr = self._sr_batch(inputs, samples)
        gt = inputs.get('gt')
        for i, sample in enumerate(samples):
            sample.pred_img = sr[i].float().cpu()
            if gt is not None:
                sample.gt_img = gt[i].float().cpu()
        return samples

    def forward(self, inputs: Dict[str, Any], data_samples: Optional[List[Any]] = None,
                mode: str = 'tensor') -> Any:
        """MMEngine's forward: ``'tensor'`` -> SR batch, ``'predict'`` -> data samples.

        Training (where a subclass supports it) runs through ``train_step``.
        """
        if mode == 'tensor':
            return self._sr_batch(inputs, data_samples)
        if mode == 'predict':
            return self._predict(inputs, data_samples)
        raise ValueError(f"{type(self).__name__}.forward mode {mode!r} is not supported: use "
                         "'tensor' or 'predict'; training runs through train_step.")
