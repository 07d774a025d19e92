"""Super-resolve files, folders and globs; the engine behind ``tools/infer.py``."""
import os
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from icmsr.datasets.image_io import load_image_rgb
from .inputs import PromptSource, collect_inputs, output_name
from .model_loading import SRInferenceModel, init_model
from .pipeline import TiledSuperResolver, TileSettings

ImageLike = Union[str, np.ndarray, torch.Tensor]


def _to_tensor(image: ImageLike) -> torch.Tensor:
    """A path, ``(H, W, 3)`` uint8 array or ``(3, H, W)`` float tensor -> ``(1, 3, H, W)`` in ``[0, 1]``."""
    if isinstance(image, str):
        image = load_image_rgb(image)  # EXIF orientation, 16-bit, CMYK... handled there
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f'Expected an (H, W, 3) uint8 RGB array, got {image.shape} {image.dtype}.')
        return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    if isinstance(image, torch.Tensor):
        t = image[None] if image.dim() == 3 else image
        if t.dim() != 4 or t.shape[:2] != (1, 3):
            raise ValueError(f'Expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}.')
        return t.float()
    raise TypeError(f'Unsupported image type {type(image).__name__}.')


def to_uint8(sr: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in ``[0, 1]`` -> ``(H, W, 3)`` uint8 (rounded)."""
    return (sr[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def super_resolve_image(model: SRInferenceModel, image: ImageLike, prompt: str = '',
                        tiles: Optional[TileSettings] = None, color_fix: str = 'none',
                        seed: Optional[int] = 0) -> np.ndarray:
    """Super-resolve one image with a model from :func:`icmsr.apis.init_model`.

    Args:
        model: The inference model.
        image: File path, ``(H, W, 3)`` uint8 RGB array or ``(3, H, W)`` float tensor in ``[0, 1]``.
        prompt: Text prompt.
        tiles: Tiling settings (default: 512 px tiles, 64 px overlap).
        color_fix: ``'none'``, ``'adain'`` or ``'wavelet'``.
        seed: Seed of torch's RNG before the call (None: leave it alone).

    Returns:
        ``(H * scale, W * scale, 3)`` uint8 RGB array.
    """
    if seed is not None:
        torch.manual_seed(seed)
    runner = TiledSuperResolver(model.generator, model.encode_prompts, model.scale, tiles, color_fix)
    return to_uint8(runner(_to_tensor(image), prompt))


@dataclass
class InferenceSummary:
    """Outcome of a run over many files.

    Attributes:
        written: Output files written.
        failed: ``(input file, reason)`` of every file that could not be processed.
        skipped: Inputs skipped because their output existed.
        seconds: Wall time of the run.
        missing_captions: Inputs without a caption (the fixed prompt was used).
    """

    written: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    seconds: float = 0.0
    missing_captions: List[str] = field(default_factory=list)

    def format(self) -> str:
        """A human-readable report (one line per failure)."""
        lines = [f'{len(self.written)} written, {len(self.failed)} failed, {len(self.skipped)} skipped '
                 f'in {self.seconds:.1f} s']
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


class SRInferencer:
    """Super-resolve images with a trained ICM-SR generator.

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
        tiles: Tiling settings.
        color_fix: Colour correction toward the input.
        prompt: Fixed prompt (``''``: empty prompt).
        captions: Per-image captions (folder of ``<stem>.txt``, JSON or TSV file).
        seed: Seed set before every image (outputs do not depend on file order).
        base_model: Base-model folder/hub id overriding an export's.
        scale: Override the model's upscaling factor.
        model: An already built :class:`SRInferenceModel` (then config/weights are ignored).
    """

    def __init__(self, config: Any = None, weights: Optional[str] = None, device: Optional[str] = None,
                 dtype: Any = 'float32', fuse: bool = True, tiles: Optional[TileSettings] = None,
                 color_fix: str = 'none', prompt: str = '', captions: Optional[str] = None,
                 seed: Optional[int] = 0, base_model: Optional[str] = None,
                 scale: Optional[int] = None, model: Optional[SRInferenceModel] = None) -> None:
        if device is None:
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        self.model = model if model is not None else init_model(
            config, weights, device, dtype, fuse, base_model, scale)
        self.runner = TiledSuperResolver(self.model.generator, self.model.encode_prompts,
                                         self.model.scale, tiles, color_fix)
        self.prompts = PromptSource(prompt, captions)
        self.seed = seed

    def process_one(self, path: str) -> np.ndarray:
        """Load, super-resolve and return one image (errors propagate).

        Args:
            path: Input image file.

        Returns:
            The SR image, ``(H, W, 3)`` uint8.
        """
        if self.seed is not None:
            torch.manual_seed(self.seed)
        lq = _to_tensor(path)
        return to_uint8(self.runner(lq, self.prompts(path)))

    def __call__(self, inputs: str, output_dir: str, ext: Optional[str] = None,
                 recursive: bool = False, skip_existing: bool = False,
                 progress: bool = True) -> InferenceSummary:
        """Super-resolve every image of ``inputs`` into ``output_dir`` (same names).

        A file that cannot be read or processed is recorded with its reason and
        the run goes on with the next file.

        Args:
            inputs: File, folder or glob pattern.
            output_dir: Output folder (created).
            ext: Output extension (default: keep the input's).
            recursive: Descend into sub-folders of a folder input.
            skip_existing: Do not recompute outputs that exist.
            progress: Show a tqdm progress bar.

        Returns:
            The run's :class:`InferenceSummary`.
        """
        from tqdm import tqdm
        items = collect_inputs(inputs, recursive)
        summary = InferenceSummary()
        start = time.perf_counter()
        bar = tqdm(items, desc='super-resolving', unit='img', disable=not progress)
        if progress:
            self.runner.progress = lambda stage, done, total: bar.set_postfix_str(
                f'{stage} tile {done}/{total}', refresh=False)
        try:
            for path, rel in bar:
                out_path = os.path.join(output_dir, output_name(rel, ext))
                if skip_existing and os.path.exists(out_path):
                    summary.skipped.append(path)
                    continue
                try:
                    save_image(self.process_one(path), out_path)
                except (OSError, ValueError, RuntimeError, MemoryError) as err:
                    # OSError covers unreadable files (ImageLoadError); RuntimeError covers
                    # out-of-memory, which we clear so the next (smaller) file can run.
                    if isinstance(err, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    summary.failed.append((path, f'{type(err).__name__}: {err}'))
                    continue
                summary.written.append(out_path)
        finally:
            self.runner.progress = None
            bar.close()
        summary.seconds = time.perf_counter() - start
        summary.missing_captions = list(self.prompts.missing)
        return summary
