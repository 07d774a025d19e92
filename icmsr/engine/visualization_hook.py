"""Write training image grids (LQ | SR | HQ | condition maps) to the visualizer's backends."""
from typing import List, Optional, Sequence

import numpy as np

import torch
import torch.nn.functional as F
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torchvision.utils import make_grid

from icmsr.registry import HOOKS


def _as_rgb(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bring a ``(B, C, h, w)`` batch in ``[0, 1]`` to 3 channels at ``size`` (nearest)."""
    img = img.detach().float().cpu()
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    if tuple(img.shape[-2:]) != tuple(size):
        img = F.interpolate(img, size=tuple(size), mode='nearest')
    return img.clamp(0, 1)


#: Column names of the condition maps, by ``ConditionExtractor`` mode.
CONDITION_LABELS = {'colormap': ['colormap'], 'canny': ['Canny'],
                    'multi': ['colormap', 'Canny'], 'lq': ['LQ condition']}
_PADDING = 2
_HEADER = 14  # pixels of the label strip (Pillow's default bitmap font is 11 px high)


def _label_strip(labels: Sequence[str], panel_width: int, width: int) -> np.ndarray:
    """A white ``(_HEADER, width, 3)`` strip with each label centred over its column."""
    from PIL import Image, ImageDraw, ImageFont
    strip = Image.new('RGB', (width, _HEADER), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default()
    for j, label in enumerate(labels):
        left = _PADDING + j * (panel_width + _PADDING)
        text_width = draw.textlength(label, font=font)
        x = left + max(0.0, (panel_width - text_width) / 2)
        draw.text((x, 1), label, fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def sr_grid(columns: List[torch.Tensor], max_images: int,
            labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Lay out one row per image, one column per panel, with a label above each column.

    Args:
        columns: Panels, each ``(B, C, h, w)`` in ``[0, 1]``; the first one
            sets the panel size.
        max_images: Number of rows (images of the batch) to show.
        labels: One name per column (e.g. ``LQ, SR, HQ, colormap, Canny``),
            drawn in a strip above the grid; None for no strip.

    Returns:
        uint8 ``(H, W, 3)`` grid, ready for ``Visualizer.add_image``.

    Raises:
        ValueError: When the number of labels differs from the number of columns.
    """
    size = columns[0].shape[-2:]
    panels = [_as_rgb(c[:max_images], size) for c in columns]
    # Interleave so that each row of the grid is one image: LQ, SR, HQ, ...
    tiles = torch.stack(panels, dim=1).flatten(0, 1)
    grid = make_grid(tiles, nrow=len(panels), padding=_PADDING, pad_value=1.0)
    grid = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    if labels is None:
        return grid
    if len(labels) != len(columns):
        raise ValueError(f'sr_grid: {len(labels)} labels for {len(columns)} columns')
    return np.concatenate([_label_strip(labels, int(size[1]), grid.shape[1]), grid], axis=0)


@HOOKS.register_module()
class SRVisualizationHook(Hook):
    """Every ``interval`` iterations, log a grid of the batch the training step just trained on.

    Columns: LQ (the degraded input at the GT size), SR (the generator's output
    of that step, before its update), HQ, then the condition maps the teacher
    saw (colormap, Canny, or the LQ condition), each named in a label strip
    above the grid. The training step hands them over as the model's
    ``last_batch`` (``ICMSR.train_step``); the hook computes nothing and draws no
    random numbers, so switching it on or off does not change the training run.
    The grid goes to every backend of the Runner's visualizer
    (``LocalVisBackend``: ``<work_dir>/<timestamp>/vis_data/vis_image``;
    ``TensorboardVisBackend``: the *Images* tab).

    Args:
        interval: Iterations between two grids (also written at the last iteration).
        max_images: Images of the batch to show.
        name: Image name given to the visualizer.
    """

    priority = 'NORMAL'

    def __init__(self, interval: int = 1000, max_images: int = 4,
                 name: str = 'train_lq_sr_hq') -> None:
        if interval < 1:
            raise ValueError(f'SRVisualizationHook: interval must be >= 1, got {interval}')
        self.interval = interval
        self.max_images = max_images
        self.name = name

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        """Log a grid when the iteration count hits the interval."""
        if self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner):
            self._log_grid(runner)

    @master_only
    def _log_grid(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        batch = getattr(model, 'last_batch', None)
        if batch is None:
            raise RuntimeError(f'SRVisualizationHook: {type(model).__name__}.train_step hands '
                               'over no `last_batch`; remove the hook from default_hooks.')
        conditions = list(model.condition_panels(batch['cond']))
        columns = [batch['lq'], batch['sr'], batch['gt']] + conditions
        grid = sr_grid(columns, self.max_images, self.labels(model, len(columns)))
        runner.visualizer.add_image(self.name, grid, step=runner.iter + 1)

    @staticmethod
    def labels(model, num_columns: int) -> List[str]:
        """Column names: ``LQ, SR, HQ`` and the condition maps of the model's condition block.

        Args:
            model: The unwrapped model.
            num_columns: Number of panels.

        Returns:
            One label per column.
        """
        condition = getattr(model, 'condition', None)
        conds = list(CONDITION_LABELS.get(getattr(condition, 'kind', None), []))
        names = ['LQ', 'SR', 'HQ'] + conds
        # Unknown extractors: number the extra panels rather than mislabel them.
        names += [f'condition {i}' for i in range(1, num_columns - len(names) + 1)]
        return names[:num_columns]
