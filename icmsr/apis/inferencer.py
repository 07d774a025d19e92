"""Super-resolve files, folders, globs and in-memory images; the engine behind ``tools/infer.py``.

Everything here runs :meth:`icmsr.models.OneStepSR.super_resolve`, the toolkit's one
super-resolution path, on one image at a time.
"""
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from icmsr.datasets.image_io import load_image_rgb, pil_to_rgb_array
from icmsr.models.one_step_sr import OneStepSR
from icmsr.user_errors import check_output_folder
from icmsr.utils.tiling import TileSettings
from .inputs import PromptSource, collect_inputs, output_name
from .model_loading import default_device, init_model

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def _array_to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1|3|4)`` uint8 or float-in-[0, 1] arrays -> ``(H, W, 3)`` uint8."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f'Expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image array, '
                         f'got shape {image.shape}.')
    image = image[..., :3]  # drop alpha, as the file loader does
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.floating):
            raise ValueError(f'Image arrays must be uint8 or float in [0, 1], got {image.dtype}.')
        if image.size and (np.nanmin(image) < 0 or np.nanmax(image) > 1 or np.isnan(image).any()):
            raise ValueError('Float image arrays must hold values in [0, 1].')
        image = np.round(image * 255).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def image_to_tensor(image: ImageLike) -> torch.Tensor:
    """Any supported image -> ``(1, 3, H, W)`` float32 in ``[0, 1]``.

    Args:
        image: a file path (read by the toolkit's image reader: EXIF, 16-bit, CMYK...),
            a Pillow image, an ``(H, W[, C])`` uint8 or float array (gray, RGB or RGBA),
            or a ``(3, H, W)`` / ``(1, 3, H, W)`` float tensor in ``[0, 1]``.

    Returns:
        The tensor.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image_rgb(os.fspath(image))
    elif isinstance(image, Image.Image):
        image = pil_to_rgb_array(image)
    if isinstance(image, np.ndarray):
        rgb = _array_to_rgb_uint8(image)
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255.0
    if isinstance(image, torch.Tensor):
        t = image[None] if image.dim() == 3 else image
        if t.dim() != 4 or t.shape[:2] != (1, 3):
            raise ValueError(f'Expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}.')
        return t.float()
    raise TypeError(f'Unsupported image type {type(image).__name__}: pass a path, a PIL image, '
                    'a numpy array or a tensor.')


def to_uint8(sr: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in ``[0, 1]`` -> ``(H, W, 3)`` uint8 (rounded)."""
    return (sr[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def super_resolve_image(model: OneStepSR, image: Union[ImageLike, Sequence[ImageLike]],
                        prompt: str = '', tiles: Optional[TileSettings] = None,
                        color_fix: Optional[str] = None,
                        seed: Optional[int] = 0) -> Union[np.ndarray, List[np.ndarray]]:
    """Super-resolve one image (or a list of them) with a model from :func:`init_model`.

    Args:
        model: The inference model.
        image: See :func:`image_to_tensor`; a list gives a list of results.
        prompt: Text prompt.
        tiles: Tiling settings (default: the model's ``test_cfg``).
        color_fix: ``'none'``, ``'adain'`` or ``'wavelet'`` (default: the model's ``test_cfg``).
        seed: Seed of torch's RNG before each image (None: leave it alone).

    Returns:
        ``(H * scale, W * scale, 3)`` uint8 RGB array(s).
    """
    if isinstance(image, (list, tuple)):
        return [super_resolve_image(model, one, prompt, tiles, color_fix, seed) for one in image]
    if seed is not None:
        torch.manual_seed(seed)
    return to_uint8(model.super_resolve(image_to_tensor(image), [prompt], tiles=tiles,
                                        color_fix=color_fix))


@dataclass
class InferenceSummary:
    """Outcome of a run over many files.

    Attributes:
        written: Output files written.
        failed: ``(input file, reason)`` of every file that could not be processed.
        skipped: Inputs skipped because their output existed.
        seconds: Wall time of the run.
        missing_captions: Inputs without a caption (the fixed prompt was used).
        settings: Device, dtype, output folder and tiling of the run.
        tiles: UNet tiles processed in total.
    """

    written: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    seconds: float = 0.0
    missing_captions: List[str] = field(default_factory=list)
    settings: Dict[str, Any] = field(default_factory=dict)
    tiles: int = 0

    def format(self) -> str:
        """A human-readable report (one line per failure)."""
        lines = [f'{len(self.written)} written, {len(self.failed)} failed, {len(self.skipped)} skipped '
                 f'in {self.seconds:.1f} s']
        if self.settings:
            s = self.settings
            lines.append(f"device {s.get('device')}, {s.get('dtype')}, {self.tiles} UNet tile(s) of "
                         f"{s.get('tile_size')} px, output folder {s.get('output')}")
        if self.missing_captions:
            lines.append(f'{len(self.missing_captions)} image(s) had no caption and used the fixed prompt')
        if self.failed:
            lines.append('failed files:')
            lines += [f'  {path}: {reason}' for path, reason in self.failed]
        return '\n'.join(lines)


def save_image(array: np.ndarray, path: str) -> None:
    """Write an ``(H, W, 3)`` uint8 RGB array; JPEG at quality 95, others lossless.

    Args:
        array: The image.
        path: Destination; its folder is created.
    """
    from icmsr.utils.atomic_io import atomic_save_image
    kwargs: dict = {}
    if path.lower().endswith(('.jpg', '.jpeg')):
        kwargs = dict(quality=95, subsampling=0)
    elif path.lower().endswith('.webp'):
        kwargs = dict(lossless=True)
    # Atomic: a killed run never leaves a truncated image under its final name
    # (which --skip-existing would keep), and two runs never interleave one file.
    atomic_save_image(path, array, **kwargs)


def check_writable(folder: str) -> None:
    """Create ``folder`` and make sure files can be written there, before any work is done.

    Args:
        folder: The output folder.

    Raises:
        OutputNotWritableError: naming the folder, when it cannot be created or
            written (an ``OSError``).
    """
    check_output_folder(folder, '--output', create=True)


class SRInferencer:
    """Super-resolve images with a trained one-step SR model.

    Example::

        inferencer = SRInferencer('configs/icmsr_multi.py', 'work_dirs/icmsr/iter_100000.pth',
                                  device='cuda', dtype='float16', color_fix='wavelet')
        summary = inferencer('photos/', 'sr/')
        print(summary.format())

    Args:
        config: Config file/object (may be None for an export folder in ``weights``).
        weights: Checkpoint ``.pth`` or export folder (see :func:`init_model`).
        device: Device (default: CUDA when available).
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        fuse: Fold the LoRA into the base weights.
        tiles: Tiling settings (default: the config's ``test_cfg``).
        color_fix: Colour correction toward the input (default: the config's ``test_cfg``).
        prompt: Fixed prompt (``''``: empty prompt).
        captions: Per-image captions (folder of ``<stem>.txt``, JSON or TSV file).
        seed: Seed set before every image (outputs do not depend on file order).
        base_model: Base-model folder/hub id overriding an export's.
        scale: Override the model's upscaling factor.
        model: An already built :class:`OneStepSR` (then config/weights are ignored).
        allow_untrained: Run without trained weights (smoke tests).
        base_check: ``'error'`` or ``'warn'`` for weights trained on another base.
        trust_checkpoint: unpickle the checkpoint fully (only for files you trust).
    """

    def __init__(self, config: Any = None, weights: Optional[str] = None, device: Optional[str] = None,
                 dtype: Any = 'float32', fuse: bool = True, tiles: Optional[TileSettings] = None,
                 color_fix: Optional[str] = None, prompt: str = '', captions: Optional[str] = None,
                 seed: Optional[int] = 0, base_model: Optional[str] = None,
                 scale: Optional[int] = None, model: Optional[OneStepSR] = None,
                 allow_untrained: bool = False, base_check: str = 'error',
                 trust_checkpoint: bool = False) -> None:
        self.device = str(device or default_device())
        self.dtype = str(dtype)
        self.model = model if model is not None else init_model(
            config, weights, self.device, dtype, fuse, base_model, scale, allow_untrained, base_check,
            trust_checkpoint)
        self.tiles = tiles or dataclasses.replace(self.model.tiles)
        self.tiles.validate()
        self.color_fix = color_fix
        self.prompts = PromptSource(prompt, captions)
        self.seed = seed

    def process_one(self, path: str, progress: Optional[Any] = None) -> np.ndarray:
        """Load, super-resolve and return one image (errors propagate).

        Args:
            path: Input image file.
            progress: Optional ``progress(stage, done, total)`` callback of the tiles.

        Returns:
            The SR image, ``(H, W, 3)`` uint8.
        """
        if self.seed is not None:
            torch.manual_seed(self.seed)
        sr = self.model.super_resolve(image_to_tensor(path), [self.prompts(path)], tiles=self.tiles,
                                      color_fix=self.color_fix, progress=progress)
        return to_uint8(sr)

    def __call__(self, inputs: str, output_dir: str, ext: Optional[str] = None,
                 recursive: bool = False, skip_existing: bool = False,
                 progress: bool = True) -> InferenceSummary:
        """Super-resolve every image of ``inputs`` into ``output_dir`` (same names).

        The output folder is checked for writing first. A file that cannot be
        read or processed is recorded with its reason and the run goes on.

        Args:
            inputs: File, folder or glob pattern.
            output_dir: Output folder (created).
            ext: Output extension (default: keep the input's).
            recursive: Descend into sub-folders of a folder input.
            skip_existing: Do not recompute outputs that exist.
            progress: Show tqdm progress bars (images, and tiles of the current image).

        Returns:
            The run's :class:`InferenceSummary`.
        """
        from tqdm import tqdm
        items = collect_inputs(inputs, recursive)
        check_writable(output_dir)
        summary = InferenceSummary(settings=dict(device=self.device, dtype=self.dtype,
                                                 output=output_dir, tile_size=self.tiles.tile_size))
        start = time.perf_counter()
        bar = tqdm(items, desc='super-resolving', unit='img', disable=not progress)

        def on_tile(stage: str, done: int, total: int) -> None:
            if stage == 'denoise' and done == total:
                summary.tiles += total
            bar.set_postfix_str(f'{stage} tile {done}/{total}', refresh=True)

        try:
            for path, rel in bar:
                out_path = os.path.join(output_dir, output_name(rel, ext))
                if skip_existing and os.path.exists(out_path):
                    summary.skipped.append(path)
                    continue
                try:
                    save_image(self.process_one(path, on_tile), out_path)
                except (OSError, ValueError, RuntimeError, MemoryError) as err:
                    # OSError covers unreadable files (ImageLoadError); RuntimeError covers
                    # out-of-memory, which we clear so the next (smaller) file can run.
                    if isinstance(err, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    summary.failed.append((path, f'{type(err).__name__}: {err}'))
                    continue
                summary.written.append(out_path)
        finally:
            bar.close()
        summary.seconds = time.perf_counter() - start
        summary.missing_captions = list(self.prompts.missing)
        return summary
