"""Per-image scorers with the settings of the community's Real-ISR tables.

Every scorer takes a batch of SR images (and GT images for full-reference
metrics) as float tensors ``(B, 3, H, W)`` in ``[0, 1]`` and returns one float per
image. Settings follow OSEDiff's ``test_metrics.py``, which ICM-SR's tables use:
PSNR/SSIM on the Y channel of YCbCr without border crop, LPIPS with AlexNet,
MUSIQ trained on KonIQ, MANIQA trained on PIPAL, TOPIQ-NR on KonIQ, LIQE on KonIQ.

NIQE uses pyiqa's implementation with the natural-scene parameters that ship
with basicsr (``basicsr/metrics/niqe_pris_params.npz``), so it needs no download;
on OSEDiff's RealSR outputs it reproduces the published average to 3e-4.
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .fast_ssim import FastSSIMScorer
from .weights import (check_weights_available, create_pyiqa_metric, offline_pyiqa,
                      resolve_weights_dir)


@dataclass(frozen=True)
class MetricInfo:
    """Static facts about one metric.

    Attributes:
        name: Our key (``psnr``, ``topiq_nr``, ...).
        label: Column header used in reports (the paper's spelling).
        lower_better: Direction of improvement.
        full_reference: Whether the GT image is needed.
        pyiqa_name: Name passed to ``pyiqa.create_metric`` (None: not pyiqa-built).
        options: Keyword options given to pyiqa.
        set_level: True for metrics computed once per set (FID).
    """

    name: str
    label: str
    lower_better: bool
    full_reference: bool
    pyiqa_name: Optional[str] = None
    options: Dict = field(default_factory=dict)
    set_level: bool = False


_Y = dict(test_y_channel=True, color_space='ycbcr')
# Facts about each metric key (not to be confused with the METRICS registry of
# icmsr.registry), in the paper's table order: perceptual w/ ref, w/o ref, fidelity.
METRIC_INFO: Dict[str, MetricInfo] = {m.name: m for m in [
    MetricInfo('lpips', 'LPIPS', True, True, 'lpips'),
    MetricInfo('dists', 'DISTS', True, True, 'dists'),
    MetricInfo('fid', 'FID', True, True, 'fid', set_level=True),
    MetricInfo('niqe', 'NIQE', True, False),
    MetricInfo('musiq', 'MUSIQ', False, False, 'musiq'),
    MetricInfo('maniqa', 'MANIQA', False, False, 'maniqa-pipal'),
    MetricInfo('clipiqa', 'CLIPIQA', False, False, 'clipiqa'),
    # Its checkpoint holds the ResNet-50 backbone: no ImageNet weights needed first.
    MetricInfo('topiq_nr', 'TOPIQ', False, False, 'topiq_nr', dict(backbone_pretrain=False)),
    MetricInfo('liqe', 'LIQE', False, False, 'liqe'),
    MetricInfo('psnr', 'PSNR', False, True, 'psnr', dict(_Y, crop_border=0)),
    MetricInfo('ssim', 'SSIM', False, True, 'ssim', dict(_Y, crop_border=0)),
]}
ALIASES = {'topiq': 'topiq_nr', 'maniqa-pipal': 'maniqa', 'musiq-koniq': 'musiq',
           'clip-iqa': 'clipiqa'}
DEFAULT_METRICS = list(METRIC_INFO)


def canonical_name(name: str) -> str:
    """Map a user-given metric name to our key.

    Args:
        name: E.g. ``'PSNR'``, ``'topiq'``.

    Returns:
        The key in :data:`METRIC_INFO`.

    Raises:
        KeyError: Naming the known metrics.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in METRIC_INFO:
        raise KeyError(f'Unknown metric {name!r}; choose from {list(METRIC_INFO)} '
                       f'(aliases {sorted(ALIASES)})')
    return key


def basicsr_niqe_params() -> Dict[str, torch.Tensor]:
    """Load the NIQE natural-scene model that ships with basicsr.

    Returns:
        ``mu`` (36,) and ``cov`` (36, 36) float64 tensors.
    """
    import importlib.util
    spec = importlib.util.find_spec('basicsr')  # locate only: importing basicsr is slow
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('basicsr is not installed; NIQE uses its parameters '
                          '(pip install basicsr==1.4.2)')
    path = os.path.join(list(spec.submodule_search_locations)[0], 'metrics', 'niqe_pris_params.npz')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'NIQE parameters not found at {path}; reinstall basicsr==1.4.2')
    params = np.load(path)
    return {'mu': torch.from_numpy(np.ravel(params['mu_pris_param'])).double(),
            'cov': torch.from_numpy(params['cov_pris_param']).double()}


class NIQEScorer:
    """NIQE on the Y channel (YIQ, as pyiqa) with basicsr's parameters.

    Images are scored as 8-bit (rounded to 8-bit codes first), so the integer Y
    channel and the score are the same on every CPU (see :mod:`.niqe`).

    Args:
        crop_border: Pixels dropped at each edge before scoring.
    """

    def __init__(self, crop_border: int = 0) -> None:
        params = basicsr_niqe_params()
        self.mu, self.cov = params['mu'], params['cov']
        self.crop_border = crop_border

    def __call__(self, pred: torch.Tensor, gt: Optional[torch.Tensor] = None) -> List[float]:
        """Score a batch.

        Args:
            pred: ``(B, 3, H, W)`` in ``[0, 1]``.
            gt: Ignored (no-reference metric).

        Returns:
            One NIQE value per image.
        """
        from .niqe import niqe_8bit
        pred = pred.detach().float().cpu()
        # One image at a time: NIQE drops partial 96-px blocks per image, which a
        # batch of differently sized images could not express.
        return [float(niqe_8bit(p[None], self.mu, self.cov, self.crop_border))
                for p in pred]


class PyiqaScorer:
    """A pyiqa per-image metric built once and called on batches.

    Args:
        info: The metric's :class:`MetricInfo`.
        device: Device to run on.
        options: Overrides of the default options (e.g. ``crop_border``).
        weights_dir: Offline weights folder (named in errors), or None.
    """

    def __init__(self, info: MetricInfo, device: torch.device, options: Optional[Dict] = None,
                 weights_dir: Optional[str] = None):
        self.info = info
        self.device = device
        opts = dict(info.options)
        opts.update(options or {})
        self.model = create_pyiqa_metric(info.name, info.pyiqa_name, device, weights_dir, **opts)

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: Optional[torch.Tensor] = None) -> List[float]:
        """Score a batch.

        Args:
            pred: ``(B, 3, H, W)`` in ``[0, 1]``.
            gt: ``(B, 3, H, W)`` in ``[0, 1]`` for full-reference metrics.

        Returns:
            One value per image.
        """
        pred = pred.to(self.device, torch.float32)
        if self.info.full_reference:
            if gt is None:
                raise ValueError(f'{self.info.label} needs the GT image (gt_img) for each sample')
            out = self.model(pred, gt.to(self.device, torch.float32))
        else:
            out = self.model(pred)
        return [float(v) for v in torch.as_tensor(out).reshape(-1).cpu()]


def build_scorers(metrics: Sequence[str], device: Optional[str] = None,
                  weights_dir: Optional[str] = None,
                  options: Optional[Dict[str, Dict]] = None) -> Dict[str, Callable]:
    """Build the per-image scorers of the given metrics (FID is skipped: set level).

    Args:
        metrics: Metric names (aliases allowed).
        device: ``'cpu'``, ``'cuda'`` ...; default CUDA when available.
        weights_dir: Offline weights folder; default ``$ICMSR_METRIC_WEIGHTS``.
        options: Per-metric option overrides, e.g. ``{'psnr': {'crop_border': 4}}``.

    Returns:
        Mapping from metric key to a callable ``(pred, gt) -> list[float]``.

    Raises:
        MetricWeightsError: Listing every missing weight file at once.
    """
    keys = [canonical_name(m) for m in metrics]
    options = {canonical_name(k): v for k, v in (options or {}).items()}
    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    weights_dir = resolve_weights_dir(weights_dir)
    check_weights_available(keys, weights_dir)  # one clear message, also without a folder
    scorers: Dict[str, Callable] = {}
    with offline_pyiqa(weights_dir, [k for k in keys if not METRIC_INFO[k].set_level]):
        for key in keys:
            info = METRIC_INFO[key]
            if info.set_level:
                continue
            if key == 'niqe':
                scorers[key] = NIQEScorer(**options.get(key, {}))
            elif key == 'ssim':
                # pyiqa's SSIM with a separable window: same values, 23x faster on CPU.
                scorers[key] = FastSSIMScorer(**{**info.options, **options.get(key, {})},
                                              device=dev)
            else:
                scorers[key] = PyiqaScorer(info, dev, options.get(key), weights_dir)
    return scorers


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round ``[0, 1]`` images to 8 bits, as saving a PNG and reading it back does.

    Args:
        img: Float tensor in ``[0, 1]`` (values outside are clamped).

    Returns:
        Float32 tensor on the same device with values ``k / 255``.
    """
    return (img.detach().float().clamp(0, 1) * 255.0).round() / 255.0
