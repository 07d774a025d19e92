"""``ICMSRPipeline``: the one-step SR model as a ``diffusers.DiffusionPipeline``.

The pipeline's components are the diffusers/transformers modules of Stable
Diffusion (``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``);
it wraps an :class:`~icmsr.models.OneStepSR` built on those very modules (the LoRA
attaches to them by forward hooks) and every call runs
:meth:`OneStepSR.super_resolve`, the toolkit's one super-resolution path. So its
output equals ``tools/infer.py --no-fuse`` and ``SRInferencer`` bit for bit.

``save_pretrained`` writes diffusers' folder layout (``model_index.json`` carrying
the model's settings, one folder per component) plus the LoRA as an export
folder in ``icmsr_lora/``; ``from_pretrained`` reads it back. A fused pipeline
(:meth:`ICMSRPipeline.fuse_lora`) saves the folded weights instead.
"""
import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from PIL import Image

from icmsr.models.one_step_sr import OneStepSR
from icmsr.models.generator import fuse_generator_lora
from .image_sr import ImageLike, super_resolve_image, super_resolve_tensor
from .lora_export import build_model_from_export, export_model, load_model_lora

#: Sub-folder of a saved pipeline holding its (unfused) LoRA as an export folder.
LORA_SUBFOLDER = 'icmsr_lora'
_COMPONENTS = ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler')
_NOT_SETTINGS = set(_COMPONENTS) | {'type', 'data_preprocessor', 'init_cfg', 'base_seed'}
OUTPUT_TYPES = ('pil', 'np', 'pt')


def model_settings(model_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The non-component part of an ``OneStepSR`` config (generator, text, scale, test_cfg...).

    Args:
        model_cfg: An ``OneStepSR`` config (e.g. ``icmsr_lora.json``'s ``model``).

    Returns:
        The settings the pipeline keeps in its ``model_index.json``.
    """
    return {k: v for k, v in dict(model_cfg).items() if k not in _NOT_SETTINGS}


class ICMSRPipeline(DiffusionPipeline):
    """One-step diffusion super-resolution as a diffusers pipeline.

    Args:
        unet: ``UNet2DConditionModel`` (base weights; the LoRA is attached by the wrapped model).
        vae: ``AutoencoderKL``.
        text_encoder: ``CLIPTextModel``.
        tokenizer: ``CLIPTokenizer``.
        scheduler: ``DDPMScheduler`` (its noise schedule gives the x0 formula).
        icmsr_config: the model settings (:func:`model_settings` of an ``OneStepSR`` config:
            ``generator``, ``text``, ``scale``, ``test_cfg``).
        lora_fused: the components already hold the LoRA folded into their weights.
        sr_model: an ``OneStepSR`` already built on exactly these components (used by
            :meth:`from_export`; otherwise one is built here with untrained LoRA, which
            ``from_pretrained`` then loads).
    """


    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 icmsr_config: Optional[Dict[str, Any]] = None, lora_fused: bool = False,
                 sr_model: Optional[OneStepSR] = None) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler)
        settings = dict(icmsr_config or {})
        self.register_to_config(icmsr_config=settings, lora_fused=bool(lora_fused))
        if sr_model is None:
            sr_model = OneStepSR(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                 scheduler=scheduler, base_seed=None, **settings)
            if lora_fused:
                # Fresh LoRA branches are zero (the identity) and conv_in copies the folded one.
                fuse_generator_lora(sr_model.generator)
        elif sr_model.unet is not unet or sr_model.generator.vae is not vae:
            raise ValueError('sr_model must be built on the unet and vae given to the pipeline.')
        self.sr_model = sr_model.eval().requires_grad_(False)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_export(cls, export_dir: str, base_model: Optional[str] = None,
                    base_check: str = 'error', fuse: bool = False) -> 'ICMSRPipeline':
        """Build the pipeline from an export folder (``tools/export_lora.py``) in one call.

        Args:
            export_dir: The export folder (``icmsr_lora.json`` + safetensors).
            base_model: SD folder or hub id overriding the export's base model.
            base_check: ``'error'`` or ``'warn'`` when the base differs from the trained one.
            fuse: fold the LoRA into the weights (faster; equal up to float rounding).

        Returns:
            The pipeline (CPU, float32).
        """
        model, meta = build_model_from_export(export_dir, base_model, base_check)
        pipe = cls(unet=model.unet, vae=model.generator.vae, text_encoder=model.text.text_encoder,
                   tokenizer=model.text.tokenizer, scheduler=model.scheduler,
                   icmsr_config=model_settings(meta['model']), sr_model=model)
        if fuse:
            pipe.fuse_lora()
        return pipe

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike],
                        **kwargs: Any) -> 'ICMSRPipeline':
        """Load a pipeline written by :meth:`save_pretrained` (a folder or a hub repository).

        Args:
            pretrained_model_name_or_path: The folder or hub id.
            **kwargs: ``DiffusionPipeline.from_pretrained`` arguments; ``torch_dtype`` casts
                the pipeline after the LoRA is loaded.

        Returns:
            The pipeline with its LoRA loaded.
        """
        folder = os.fspath(pretrained_model_name_or_path)
        if not os.path.isdir(folder):
            from huggingface_hub import snapshot_download
            folder = snapshot_download(folder, revision=kwargs.get('revision'))
        # Loaded in float32 and cast once the LoRA is in, as init_model does: the base
        # fingerprint is taken on the weights as saved.
        torch_dtype = kwargs.pop('torch_dtype', None)
        pipe = super().from_pretrained(folder, **kwargs)
        if not pipe.config.lora_fused:
            lora_dir = os.path.join(folder, LORA_SUBFOLDER)
            if not os.path.isdir(lora_dir):
                raise FileNotFoundError(f'{folder!r} has no {LORA_SUBFOLDER}/ folder: it is not a '
                                        'pipeline saved by ICMSRPipeline.save_pretrained.')
            load_model_lora(pipe.sr_model, lora_dir)
        if torch_dtype is not None:
            pipe.to(torch_dtype)
            pipe.sr_model.to(dtype=torch_dtype)
        return pipe

    def save_pretrained(self, save_directory: Union[str, os.PathLike], **kwargs: Any) -> None:
        """Save the components (diffusers layout) and the LoRA (``icmsr_lora/`` export folder).

        Args:
            save_directory: Destination folder.
            **kwargs: ``DiffusionPipeline.save_pretrained`` arguments.
        """
        super().save_pretrained(save_directory, **kwargs)
        if self.config.lora_fused:
            return  # the folded weights are in the components
        folder = os.path.abspath(os.fspath(save_directory))
        model_cfg = dict(type='OneStepSR', **self.config.icmsr_config)
        for key, typ in (('unet', 'SDUNet'), ('vae', 'SDVAE'), ('text_encoder', 'SDTextEncoder'),
                         ('tokenizer', 'SDTokenizer'), ('scheduler', 'SDScheduler')):
            model_cfg[key] = dict(type=typ, from_pretrained=folder, subfolder=key)
        export_model(self.sr_model, os.path.join(folder, LORA_SUBFOLDER), model_cfg)

    def fuse_lora(self) -> Dict[str, int]:
        """Fold the LoRA and the trained ``conv_in`` into the UNet and VAE weights.

        Returns:
            Number of fused layers per part (see :func:`icmsr.apis.fuse_generator_lora`).
        """
        counts = fuse_generator_lora(self.sr_model.generator)
        self.register_to_config(lora_fused=True)
        return counts

    # ----------------------------------------------------------------- inference
    @staticmethod
    def _prompts(prompt: Optional[Union[str, Sequence[str]]], count: int) -> List[str]:
        if prompt is None or isinstance(prompt, str):
            return [prompt or ''] * count
        prompts = list(prompt)
        if len(prompts) != count:
            raise ValueError(f'Got {len(prompts)} prompts for {count} images: give one prompt, '
                             'or one per image.')
        return prompts

    @torch.no_grad()
    def __call__(self, image: Union[ImageLike, Sequence[ImageLike]],
                 prompt: Optional[Union[str, Sequence[str]]] = None,
                 tile_size: Optional[Union[int, str]] = None, tile_overlap: Optional[int] = None,
                 color_fix: Optional[str] = None, output_type: str = 'pil',
                 seed: Optional[int] = 0,
                 progress: Optional[Callable[[str, int, int], None]] = None,
                 return_dict: bool = True) -> Any:
        """Super-resolve one image or a list of them.

        Args:
            image: a path, PIL image, ``(H, W[, C])`` array or ``(3, H, W)`` tensor in
                ``[0, 1]``, or a list of them (images may differ in size).
            prompt: one prompt for all images, one per image, or None (empty prompt).
            tile_size: UNet tile in output pixels (default: the model's ``test_cfg``), or
                ``'auto'``: the UNet and VAE tiles as large as the device's memory allows
                (the whole image when it fits; :class:`~icmsr.utils.tiling.TileSettings`).
            tile_overlap: overlap of UNet tiles (default: the model's ``test_cfg``).
            color_fix: ``'none'``, ``'adain'`` or ``'wavelet'`` (default: ``test_cfg``).
            output_type: ``'pil'``, ``'np'`` (float32 ``(H, W, 3)`` in ``[0, 1]``) or
                ``'pt'`` (``(1, 3, H, W)`` float32 in ``[0, 1]``).
            seed: seed of torch's RNG before each image (None: leave it alone).
            progress: ``progress(stage, done, total)`` after every tile (see
                :meth:`OneStepSR.super_resolve`).
            return_dict: return an ``ImagePipelineOutput`` (else a tuple).

        Returns:
            ``ImagePipelineOutput(images=...)``: a list of PIL images (gray and RGBA inputs
            stay gray/RGBA, see :func:`~icmsr.apis.super_resolve_image`), or for ``'np'``/``'pt'``
            RGB, one stacked array/tensor when all outputs share a size (else a list).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f'output_type={output_type!r}; choose one of {OUTPUT_TYPES}.')
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        prompts = self._prompts(prompt, len(images))
        model = self.sr_model
        tiles = model.tiles
        if tile_size == 'auto':
            tiles = dataclasses.replace(tiles, vae_tile_size='auto')
        if tile_size is not None or tile_overlap is not None:
            tiles = dataclasses.replace(tiles, **{k: v for k, v in (('tile_size', tile_size),
                                                                     ('tile_overlap', tile_overlap))
                                                  if v is not None})
        # The LoRA branches live in the wrapped model: follow the components' device and dtype.
        model.to(device=self.unet.device, dtype=self.unet.dtype)
        # One front door: uint8 images for PIL (gray and RGBA kept), float RGB for 'np'/'pt'.
        run = super_resolve_image if output_type == 'pil' else super_resolve_tensor
        results = []
        with self.progress_bar(total=len(images)) as bar:
            for one, text in zip(images, prompts):
                sr = run(model, one, prompt=text, tiles=tiles, color_fix=color_fix, seed=seed,
                         progress=progress)
                results.append(sr if output_type == 'pil' else sr.float().cpu())
                bar.update()
        out = self._convert(results, output_type)
        return ImagePipelineOutput(images=out) if return_dict else (out, )

    @staticmethod
    def _convert(results: List[torch.Tensor], output_type: str) -> Any:
        if output_type == 'pil':
            return [Image.fromarray(sr) for sr in results]
        same = len({tuple(sr.shape) for sr in results}) == 1
        if output_type == 'pt':
            return torch.cat(results) if same else results
        arrays = [sr[0].permute(1, 2, 0).numpy() for sr in results]
        return np.stack(arrays) if same else arrays


__all__ = ['ICMSRPipeline', 'model_settings', 'LORA_SUBFOLDER']
