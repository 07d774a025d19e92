"""Super-resolve files, folders and globs into a folder; the engine behind ``tools/infer.py``.

Every image goes through :func:`icmsr.apis.super_resolve_image`, the one front door
of inference.
"""
import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from icmsr.fileio.image_io import ImageLoadError, MultiFrameWarning, load_image
from icmsr.models.one_step_sr import OneStepSR
from icmsr.user_errors import check_output_folder
from icmsr.utils.tiling import TileSettings
from .image_sr import InferenceCancelled, super_resolve_image
from .inputs import PromptSource, collect_inputs, output_name
from .model_loading import default_device, init_model


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
        multi_frame: ``(input, frame count)`` of animated or multi-page inputs (first frame used).
        redone: Existing outputs that did not decode and were computed again.
    """

    written: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    seconds: float = 0.0
    missing_captions: List[str] = field(default_factory=list)
    settings: Dict[str, Any] = field(default_factory=dict)
    tiles: int = 0
    multi_frame: List[Tuple[str, int]] = field(default_factory=list)
    redone: List[str] = field(default_factory=list)

    def format(self) -> str:
        """A human-readable report (one line per failure)."""
        lines = [f'{len(self.written)} written, {len(self.failed)} failed, {len(self.skipped)} skipped '
                 f'in {self.seconds:.1f} s']
        if self.settings:
            s = self.settings
            size = s.get('tile_size')
            size = 'automatic size' if size == 'auto' else f'{size} px'
            lines.append(f"device {s.get('device')}, {s.get('dtype')}, {self.tiles} UNet tile(s) of "
                         f"{size}, output folder {s.get('output')}")
        if self.missing_captions:
            lines.append(f'{len(self.missing_captions)} image(s) had no caption and used the fixed prompt')
        if self.multi_frame:
            lines.append(f'{len(self.multi_frame)} animated/multi-page input(s), first frame used: '
                         + ', '.join(f'{p} ({n} frames)' for p, n in self.multi_frame))
        if self.redone:
            lines.append(f'{len(self.redone)} existing output(s) did not decode and were redone: '
                         + ', '.join(self.redone))
        if self.failed:
            lines.append('failed files:')
            lines += [f'  {path}: {reason}' for path, reason in self.failed]
        return '\n'.join(lines)


def save_image(array: np.ndarray, path: str) -> None:
    """Write a uint8 gray, RGB or RGBA array atomically; JPEG at quality 95 (no alpha), others lossless.

    Args:
        array: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8.
        path: Destination; its folder is created.
    """
    from icmsr.utils.atomic_io import atomic_save_image
    kwargs: dict = {}
    array = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
    if path.lower().endswith(('.jpg', '.jpeg')):
        kwargs = dict(quality=95, subsampling=0)
        array = array[..., :3] if array.ndim == 3 else array  # JPEG stores no alpha
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
    """Super-resolve files, folders and globs with a trained one-step SR model.

    Example::

        inferencer = SRInferencer('configs/icmsr_multi.py', 'work_dirs/icmsr/iter_100000.pth',
                                  device='cuda', dtype='float16', color_fix='wavelet')
        summary = inferencer('photos/', 'sr/')
        print(summary.format())

    Args:
        config: Config file/object (may be None for an export folder in ``weights``).
        weights: Checkpoint ``.pth`` or export folder (see :func:`init_model`).
        model: An already built :class:`OneStepSR` (then config/weights are ignored).
        tiles: Tiling settings, or a dict of fields overriding the model's ``test_cfg`` ones.
        color_fix: Colour correction toward the input (default: the config's ``test_cfg``).
        prompt: Fixed prompt (``''``: empty prompt).
        captions: Per-image captions (folder of ``<stem>.txt``, JSON or TSV file).
        seed: Seed set before every image (outputs do not depend on file order).
        max_pixels: Limit on input pixels per image (None: no limit); larger files fail.
        **load: Keyword arguments of :func:`init_model` (``device``, ``dtype``, ``fuse``,
            ``base_model``, ``scale``, ``allow_untrained``, ``base_check``, ``trust_checkpoint``).
    """

    def __init__(self, config: Any = None, weights: Optional[str] = None, *,
                 model: Optional[OneStepSR] = None,
                 tiles: Union[TileSettings, Dict[str, Any], None] = None,
                 color_fix: Optional[str] = None, prompt: str = '', captions: Optional[str] = None,
                 seed: Optional[int] = 0, max_pixels: Optional[int] = None, **load: Any) -> None:
        load['device'] = str(load.get('device') or default_device())
        self.device, self.dtype = load['device'], str(load.get('dtype', 'float32'))
        self.model = model if model is not None else init_model(config, weights, **load)
        if not isinstance(tiles, TileSettings):
            tiles = dataclasses.replace(self.model.tiles, **(tiles or {}))
        tiles.validate()
        self.settings = dict(tiles=tiles, color_fix=color_fix, seed=seed, max_pixels=max_pixels)
        self.prompts = PromptSource(prompt, captions)

    @property
    def tiles(self) -> TileSettings:
        """The tiling settings of every image."""
        return self.settings['tiles']

    def process_one(self, path: str, progress: Optional[Any] = None) -> np.ndarray:
        """Load, super-resolve and return one image (errors propagate).

        Args:
            path: Input image file.
            progress: Optional ``progress(stage, done, total)`` callback of the tiles.

        Returns:
            The SR image as :func:`super_resolve_image` returns it (gray, RGB or RGBA uint8).
        """
        return super_resolve_image(self.model, path, prompt=self.prompts(path), progress=progress,
                                   **self.settings)

    def __call__(self, inputs: str, output_dir: str, *, ext: Optional[str] = None,
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
            skip_existing: Do not recompute outputs that exist and decode (others are redone).
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
                    if _decodes(out_path):
                        summary.skipped.append(path)
                        continue
                    summary.redone.append(out_path)
                    warnings.warn(f'{out_path} exists but does not decode (truncated?): redoing it')
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter('always')
                        result = self.process_one(path, on_tile)
                    save_image(result, out_path)
                except InferenceCancelled:
                    raise
                except (OSError, ValueError, RuntimeError, MemoryError) as err:
                    # OSError covers unreadable files (ImageLoadError); RuntimeError covers
                    # out-of-memory, which we clear so the next (smaller) file can run.
                    if isinstance(err, torch.cuda.OutOfMemoryError) and torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    summary.failed.append((path, f'{type(err).__name__}: {err}'))
                    continue
                finally:
                    for w in caught:  # shown as usual; animated inputs are also counted
                        warnings.warn(w.message)
                        if isinstance(w.message, MultiFrameWarning):
                            summary.multi_frame.append((path, w.message.frames))
                summary.written.append(out_path)
        finally:
            bar.close()
        summary.seconds = time.perf_counter() - start
        summary.missing_captions = list(self.prompts.missing)
        return summary


def _decodes(path: str) -> bool:
    """Whether an existing output decodes completely (a truncated file does not)."""
    try:
        load_image(path)
        return True
    except ImageLoadError:
        return False
