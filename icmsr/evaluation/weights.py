"""Offline metric weights: where each file lives, and checks before anything is built.

pyiqa fetches its checkpoints on first use and keeps them in ``$TORCH_HOME/hub/pyiqa``
(and skips files that are present); the backbones it builds on come from
torchvision (``$TORCH_HOME/hub/checkpoints``) and OpenAI CLIP (``$TORCH_HOME/hub/clip``).
Evaluation machines often have no internet, so ``icmsr`` lets one folder play
the role of ``$TORCH_HOME``::

    <weights>/hub/pyiqa/        pyiqa checkpoints (LPIPS, DISTS, MUSIQ, ...)
    <weights>/hub/checkpoints/  torchvision ImageNet backbones (AlexNet, VGG16)
    <weights>/hub/clip/         OpenAI CLIP archives (RN50, ViT-B/32)

A machine that ran pyiqa online already has this layout in ``~/.cache/torch``,
so copying that folder works, as does ``tools/download_metric_weights.py``.
MANIQA also builds timm's ViT-B/8 from the Hugging Face cache before its own
checkpoint overwrites it, so that file is looked for there (:data:`HF_FILES`).

When a weights folder is given (argument, or the ``ICMSR_METRIC_WEIGHTS``
environment variable), :func:`check_weights` lists every missing file in one
message with the URL it is published at, and :func:`offline_pyiqa` builds the
metrics with ``TORCH_HOME`` set to the folder. pyiqa then finds every file and
downloads nothing; the block verifies that first. TOPIQ's timm ResNet-50 is built
without its ImageNet weights (``backbone_pretrain=False``): its checkpoint is
loaded strictly and holds the backbone.
"""
import contextlib
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

from icmsr.fileio.digest import file_sha256
from icmsr.utils.environ import temporary_environ

from icmsr.user_errors import UserError

ENV_VAR = 'ICMSR_METRIC_WEIGHTS'

_PYIQA_BASE = 'https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main'
_TV_BASE = 'https://download.pytorch.org/models'
_CLIP_BASE = 'https://openaipublic.azureedge.net/clip/models'


@dataclass(frozen=True)
class WeightFile:
    """One file a metric needs.

    Attributes:
        relpath: Path relative to the weights folder, e.g. ``hub/pyiqa/x.pth``.
        url: Where the file is published.
        sha256: The published file's SHA-256 where its loader verifies one (CLIP).
    """

    relpath: str
    url: str
    sha256: str = ''

    @property
    def name(self) -> str:
        """File name without folders."""
        return os.path.basename(self.relpath)


def _pyiqa(name: str) -> WeightFile:
    return WeightFile(f'hub/pyiqa/{name}', f'{_PYIQA_BASE}/{name}')


def _tv(name: str) -> WeightFile:
    return WeightFile(f'hub/checkpoints/{name}', f'{_TV_BASE}/{name}')


def _clip(sha: str, name: str) -> WeightFile:
    return WeightFile(f'hub/clip/{name}', f'{_CLIP_BASE}/{sha}/{name}', sha)


# The files pyiqa 0.1.16 loads for each metric at the settings we use.
WEIGHT_FILES: Dict[str, List[WeightFile]] = {
    'psnr': [],
    'ssim': [],
    'niqe': [],  # parameters ship with basicsr
    'lpips': [_pyiqa('LPIPS_v0.1_alex-df73285e.pth'), _tv('alexnet-owt-7be5be79.pth')],
    'dists': [_pyiqa('DISTS_weights-f5e65c96.pth'), _tv('vgg16-397923af.pth')],
    'fid': [_pyiqa('pt_inception-2015-12-05-6726825d.pth')],
    'musiq': [_pyiqa('musiq_koniq_ckpt-e95806b9.pth')],
    'maniqa': [_pyiqa('MANIQA_PIPAL-ae6d356b.pth')],
    'clipiqa': [_clip('afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762',
                      'RN50.pt')],
    'topiq_nr': [_pyiqa('cfanet_nr_koniq_res50-9a73138b.pth')],
    'liqe': [_pyiqa('liqe_koniq.pt'),
             _clip('40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af',
                   'ViT-B-32.pt')],
}

# Files pyiqa takes from the Hugging Face cache: timm backbones it builds with their
# ImageNet weights before the metric checkpoint overwrites them (repo, file).
HF_FILES: Dict[str, List[tuple]] = {
    'maniqa': [('timm/vit_base_patch8_224.augreg2_in21k_ft_in1k', 'model.safetensors')],
}
# Metrics whose checkpoint pyiqa loads non-strictly: a foreign file would load silently.
_NON_STRICT = ('lpips', 'dists')


class MetricWeightsError(UserError, RuntimeError):
    """A metric weight file is missing, unreadable, or not the expected network."""


def resolve_weights_dir(weights_dir: Optional[str] = None) -> Optional[str]:
    """Pick the weights folder: the argument, else ``$ICMSR_METRIC_WEIGHTS``.

    Args:
        weights_dir: Explicit folder, or None.

    Returns:
        An absolute path, or None for pyiqa's normal (online) behaviour.
    """
    chosen = weights_dir or os.environ.get(ENV_VAR) or None
    return os.path.abspath(os.path.expanduser(chosen)) if chosen else None


def required_files(metrics: Sequence[str]) -> List[WeightFile]:
    """List the weight files the given metrics need, without duplicates.

    Args:
        metrics: Metric names (keys of :data:`WEIGHT_FILES`).

    Returns:
        The files in first-use order.

    Raises:
        KeyError: For an unknown metric name.
    """
    seen: Dict[str, WeightFile] = {}
    for name in metrics:
        if name not in WEIGHT_FILES:
            raise KeyError(f'Unknown metric {name!r}; known: {sorted(WEIGHT_FILES)}')
        for wf in WEIGHT_FILES[name]:
            seen.setdefault(wf.relpath, wf)
    return list(seen.values())


def _missing_message(missing: Sequence[str], folder: str, where: str) -> str:
    """One message naming every missing file, its URL and the download command."""
    return (f'{len(missing)} metric weight file(s) missing in {folder} ({where}):\n'
            + '\n'.join(missing) + '\nFetch them on a machine with internet with '
            f'`python tools/download_metric_weights.py --out {folder}` '
            'and copy the folder here, or copy ~/.cache/torch (and the Hugging Face cache) '
            'from a machine that ran pyiqa.')


def missing_hf_files(metrics: Sequence[str]) -> List[str]:
    """The :data:`HF_FILES` of the metrics that the Hugging Face cache lacks.

    Args:
        metrics: Metric keys.

    Returns:
        One line per missing file, naming the cache and the URL.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    missing = []
    for name in metrics:
        for repo, filename in HF_FILES.get(name, []):
            # timm falls back to the PyTorch file when the safetensors one is absent.
            if not any(isinstance(try_to_load_from_cache(repo, f), str)
                       for f in (filename, 'pytorch_model.bin')):
                missing.append(f'  {repo}/{filename} in the Hugging Face cache '
                               f'{constants.HF_HUB_CACHE}\n      from '
                               f'https://huggingface.co/{repo}/resolve/main/{filename}')
    return missing


def check_weights(metrics: Sequence[str], weights_dir: str) -> None:
    """Fail once, naming every missing file, if the folder lacks something.

    Files whose loader verifies a SHA-256 (CLIP, which would otherwise try to
    download the file again) are verified here too.

    Args:
        metrics: Metric names to be built.
        weights_dir: The weights folder.

    Raises:
        MetricWeightsError: Listing each missing path and its download URL, or
            naming a file that is not the published one.
    """
    missing = []
    for wf in required_files(metrics):
        path = os.path.join(weights_dir, wf.relpath)
        if not os.path.isfile(path):
            missing.append(f'  {path}\n      from {wf.url}')
        elif wf.sha256 and file_sha256(path) != wf.sha256:
            raise MetricWeightsError(f'{path} is not the published file (its SHA-256 differs '
                                     f'from {wf.sha256}); re-download it from {wf.url}')
    missing += missing_hf_files(metrics)
    if missing:
        raise MetricWeightsError(_missing_message(
            missing, weights_dir, f'set by the weights argument or ${ENV_VAR}'))


def default_weights_home() -> str:
    """The folder pyiqa, torchvision and CLIP cache into without a weights folder.

    Returns:
        ``$TORCH_HOME`` (``torch.hub.get_dir()`` without its ``hub`` part), which
        has the same layout as a weights folder.
    """
    import torch.hub
    return os.path.dirname(torch.hub.get_dir())


def check_weights_available(metrics: Sequence[str], weights_dir: Optional[str] = None) -> None:
    """Fail before anything is scored when a metric's weights cannot be had.

    With a weights folder (argument or ``$ICMSR_METRIC_WEIGHTS``) every file must
    be in it. Without one, files missing from torch's cache (``$TORCH_HOME``) are
    fine only when the network is reachable (pyiqa downloads them then);
    offline, they are reported in the same message.

    Args:
        metrics: Metric keys (FID included).
        weights_dir: Explicit weights folder, or None.

    Raises:
        MetricWeightsError: Listing each missing file, its URL and the download command.
    """
    weights_dir = resolve_weights_dir(weights_dir)
    if weights_dir is not None:
        check_weights(metrics, weights_dir)
        return
    home = default_weights_home()
    missing = [f'  {os.path.join(home, wf.relpath)}\n      from {wf.url}'
               for wf in required_files(metrics)
               if not os.path.isfile(os.path.join(home, wf.relpath))]
    missing += missing_hf_files(metrics)
    if missing:
        from icmsr.utils.network import hub_reachable
        if not hub_reachable():
            raise MetricWeightsError(_missing_message(
                missing, home, f'torch\'s cache; no ${ENV_VAR} or --weights folder is set '
                'and the network is unreachable'))


@contextlib.contextmanager
def offline_pyiqa(weights_dir: Optional[str], metrics: Sequence[str] = ()) -> Iterator[None]:
    """Build pyiqa metrics inside this block from the files of a weights folder.

    With ``weights_dir=None`` nothing changes (pyiqa may download as usual).
    Otherwise ``TORCH_HOME`` points at the folder and ``HF_HUB_OFFLINE=1`` for the
    block (both restored after): torchvision and CLIP read the folder when they
    load, and pyiqa, when first imported here, keeps its checkpoints there. After
    :func:`check_weights_available` (run it first), every file the metrics need is
    checked where those libraries will read it, so nothing is downloaded. pyiqa
    fixes its folder at its first import and ``torch.hub.set_dir()`` overrides
    ``TORCH_HOME``: a process that did either elsewhere is told to set
    ``ICMSR_METRIC_WEIGHTS`` before it starts.

    Args:
        weights_dir: The weights folder, or None.
        metrics: Metric keys to be built in the block.

    Yields:
        Nothing.

    Raises:
        MetricWeightsError: A file is missing, or would be read from elsewhere.
    """
    if weights_dir is None:
        yield
        return
    with temporary_environ(dict(TORCH_HOME=weights_dir, HF_HUB_OFFLINE='1')):
        _check_read_from(weights_dir, metrics)
        yield


def _check_read_from(weights_dir: str, metrics: Sequence[str]) -> None:
    """Fail unless each needed file is where pyiqa, torchvision and CLIP will look."""
    if not required_files(metrics):
        return
    import torch.hub
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR  # first import: the folder
    hub = torch.hub.get_dir()
    where = {'pyiqa': DEFAULT_CACHE_DIR, 'checkpoints': os.path.join(hub, 'checkpoints'),
             'clip': os.path.join(hub, 'clip')}
    unseen = [os.path.join(where[wf.relpath.split('/')[1]], wf.name)
              for wf in required_files(metrics)]
    unseen = [p for p in unseen if not os.path.isfile(p)]
    if unseen:
        raise MetricWeightsError(
            f'This process reads metric weights elsewhere than {weights_dir}: pyiqa keeps its '
            f'checkpoints in {DEFAULT_CACHE_DIR} since its first import, torch\'s hub folder is '
            f'{hub}, and these files are not there: {unseen}. Set {ENV_VAR}={weights_dir} '
            '(or TORCH_HOME) before the process starts.')


def create_pyiqa_metric(key: str, pyiqa_name: str, device, weights_dir: Optional[str],
                        **options):
    """``pyiqa.create_metric`` with an error naming the weight files when they do not fit.

    Args:
        key: Our metric key (:data:`WEIGHT_FILES`).
        pyiqa_name: The name pyiqa knows the metric by.
        device: Device to build on.
        weights_dir: The weights folder, or None for torch's cache.
        **options: pyiqa metric options.

    Returns:
        The pyiqa metric.

    Raises:
        MetricWeightsError: The metric's files are wrong or corrupt.
    """
    import pyiqa
    import torch
    folder = weights_dir or default_weights_home()
    files = [os.path.join(folder, wf.relpath) for wf in WEIGHT_FILES.get(key, [])]
    try:
        metric = pyiqa.create_metric(pyiqa_name, device=device, **options)
    except Exception as err:  # any failure here means a file is not this network's
        if not files:
            raise
        raise MetricWeightsError(
            f'{key} could not be built from {", ".join(files)} (a wrong or corrupt file? '
            f're-download it): {type(err).__name__}: {str(err)[:500]}') from err
    for path in files if key in _NON_STRICT else []:
        if '/hub/pyiqa/' not in path.replace(os.sep, '/') or not os.path.isfile(path):
            continue
        state = torch.load(path, map_location='cpu', weights_only=True)
        names = {k[7:] if k.startswith('module.') else k for k in state}
        if not names & set(metric.net.state_dict()):
            raise MetricWeightsError(
                f'{path} does not hold the weights of {type(metric.net).__name__}: none of its '
                f'{len(names)} key(s) {sorted(names)[:5]} belongs to the network. '
                'Re-download the file.')
    return metric
