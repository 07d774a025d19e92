"""Offline metric weights: where each file lives and a guard that forbids downloads.

pyiqa fetches its checkpoints from the network on first use and keeps them in
``$TORCH_HOME/hub/pyiqa``; the backbones it builds on come from torchvision
(``$TORCH_HOME/hub/checkpoints``) and OpenAI CLIP (``$TORCH_HOME/hub/clip``).
Evaluation machines often have no internet, so ``icmsr`` lets one folder play
the role of ``$TORCH_HOME``::

    <weights>/hub/pyiqa/        pyiqa checkpoints (LPIPS, DISTS, MUSIQ, ...)
    <weights>/hub/checkpoints/  torchvision ImageNet backbones (AlexNet, VGG16)
    <weights>/hub/clip/         OpenAI CLIP archives (RN50, ViT-B/32)

A machine that ran pyiqa online already has this layout in ``~/.cache/torch``,
so copying that folder works, as does ``tools/download_metric_weights.py``.

When a weights folder is given (argument, or the ``ICMSR_METRIC_WEIGHTS``
environment variable), :func:`offline_pyiqa` resolves every download pyiqa would
make to a file in that folder and turns any remaining network access into an
error. :func:`check_weights` lists all missing files in one message with the URL
each file is published at.

The timm backbones of MANIQA (ViT-B/8) and TOPIQ (ResNet-50) are not needed:
both checkpoints are loaded strictly and contain the backbone weights, so the
backbones are built without their ImageNet initialisation.
"""
import contextlib
import os
import socket
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence

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
    """

    relpath: str
    url: str

    @property
    def name(self) -> str:
        """File name without folders."""
        return os.path.basename(self.relpath)


def _pyiqa(name: str) -> WeightFile:
    return WeightFile(f'hub/pyiqa/{name}', f'{_PYIQA_BASE}/{name}')


def _tv(name: str) -> WeightFile:
    return WeightFile(f'hub/checkpoints/{name}', f'{_TV_BASE}/{name}')


def _clip(sha: str, name: str) -> WeightFile:
    return WeightFile(f'hub/clip/{name}', f'{_CLIP_BASE}/{sha}/{name}')


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


# pyiqa modules that build the metrics above.
_ARCH_MODULES = ('lpips_arch', 'dists_arch', 'fid_arch', 'inception', 'niqe_arch', 'musiq_arch',
                 'maniqa_arch', 'clipiqa_arch', 'topiq_arch', 'liqe_arch', 'psnr_arch', 'ssim_arch')


class MetricWeightsError(UserError, RuntimeError):
    """A metric weight file is missing, unreadable, or not the expected network."""


class NetworkAccessError(RuntimeError):
    """Something tried to reach the network while offline weights were in use."""


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


def _missing_message(missing: Sequence[WeightFile], folder: str, where: str) -> str:
    """One message naming every missing file, its URL and the download command."""
    lines = [f'  {os.path.join(folder, wf.relpath)}\n      from {wf.url}' for wf in missing]
    return (f'{len(missing)} metric weight file(s) missing in {folder} ({where}):\n'
            + '\n'.join(lines) + '\nFetch them on a machine with internet with '
            f'`python tools/download_metric_weights.py --out {folder}` '
            'and copy the folder here, or copy ~/.cache/torch from a machine that ran pyiqa.')


def check_weights(metrics: Sequence[str], weights_dir: str) -> None:
    """Fail once, naming every missing file, if the folder lacks something.

    Args:
        metrics: Metric names to be built.
        weights_dir: The weights folder.

    Raises:
        MetricWeightsError: Listing each missing path and its download URL.
    """
    missing = [wf for wf in required_files(metrics)
               if not os.path.isfile(os.path.join(weights_dir, wf.relpath))]
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
    missing = [wf for wf in required_files(metrics)
               if not os.path.isfile(os.path.join(home, wf.relpath))]
    if missing:
        from icmsr.utils.network import hub_reachable
        if not hub_reachable():
            raise MetricWeightsError(_missing_message(
                missing, home, f'torch\'s cache; no ${ENV_VAR} or --weights folder is set '
                'and the network is unreachable'))


def _local_file(weights_dir: str, url: str, subdir: str) -> str:
    """Map a download URL to its file in the weights folder, never downloading."""
    path = os.path.join(weights_dir, subdir, os.path.basename(url.split('?')[0]))
    if not os.path.isfile(path):
        raise MetricWeightsError(
            f'Metric weight file missing: {path}\n      from {url}\n'
            f'(offline mode: {ENV_VAR} / weights folder is set, so nothing is downloaded)')
    return path


def _refuse_network(*args, **kwargs):
    raise NetworkAccessError(
        f'Network access attempted while offline metric weights are in use ({ENV_VAR}); '
        f'target: {args[1:2] or args[:1]}. A weight file is missing from the weights folder '
        'or a metric needs a file this toolkit does not know about.')


@contextlib.contextmanager
def _patched(targets: List[tuple]) -> Iterator[None]:
    """Set ``(obj, attr, value)`` triples for the block, restoring them after."""
    # An inherited attribute (socket.socket.connect) is deleted again, not copied down.
    saved = [(obj, attr, getattr(obj, attr), attr in vars(obj)) for obj, attr, _ in targets]
    try:
        for obj, attr, value in targets:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value, own in reversed(saved):
            if own:
                setattr(obj, attr, value)
            else:
                delattr(obj, attr)


def _checked_loader(original: Callable, weights_dir: str) -> Callable:
    """Wrap pyiqa's ``load_pretrained_network`` so a wrong file fails clearly."""
    import torch

    def load_pretrained_network(net, model_path, strict=True, weight_keys=None):
        if model_path.startswith(('http://', 'https://')):
            model_path = _local_file(weights_dir, model_path, 'hub/pyiqa')
        try:
            state = torch.load(model_path, map_location='cpu', weights_only=False)
            if weight_keys is not None:
                state = state[weight_keys]
            state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
            result = net.load_state_dict(state, strict=strict)
        except Exception as err:  # any failure here means the file is not this network
            raise MetricWeightsError(
                f'{model_path} does not hold the weights of {type(net).__name__} '
                f'(wrong or corrupt file; re-download it): {type(err).__name__}: '
                f'{str(err)[:500]}') from err
        # Non-strict loads (LPIPS, DISTS) cover only part of the network; a file
        # matching none of it would otherwise load silently and score garbage.
        matched = len(state) - len(result.unexpected_keys)
        if matched == 0:
            raise MetricWeightsError(
                f'{model_path} does not hold the weights of {type(net).__name__}: none of its '
                f'{len(state)} key(s) {list(state)[:5]} belongs to the network. '
                'Re-download the file.')
        if result.unexpected_keys:
            warnings.warn(f'{model_path}: {len(result.unexpected_keys)} key(s) not used by '
                          f'{type(net).__name__}: {list(result.unexpected_keys)[:5]}')
    del original
    return load_pretrained_network


@contextlib.contextmanager
def offline_pyiqa(weights_dir: Optional[str]) -> Iterator[None]:
    """Build pyiqa metrics inside this block to use only local weight files.

    With ``weights_dir=None`` nothing changes (pyiqa may download as usual).
    Otherwise torch's hub dir points at ``<weights_dir>/hub``, every pyiqa, CLIP
    and torchvision download is resolved to a local file (or fails naming it),
    timm backbones are built without their ImageNet weights (the metric
    checkpoints overwrite them), and sockets refuse to connect.

    Args:
        weights_dir: The weights folder, or None.

    Yields:
        Nothing.
    """
    if weights_dir is None:
        yield
        return
    import timm
    import torch
    import torch.hub
    import importlib
    from pyiqa.archs import arch_util, clip_model
    from pyiqa.utils import download_util
    # pyiqa imports arch modules lazily; a module first imported inside this block
    # would bind our wrappers for good, so import ours first (others are repaired
    # on exit below).
    for name in _ARCH_MODULES:
        importlib.import_module(f'pyiqa.archs.{name}')

    hub_dir = os.path.join(weights_dir, 'hub')
    pyiqa_dir = os.path.join(hub_dir, 'pyiqa')

    def load_file_from_url(url, model_dir=None, progress=True, file_name=None):
        return _local_file(weights_dir, file_name or url, 'hub/pyiqa')

    def clip_download(url, root):
        return _local_file(weights_dir, url, 'hub/clip')

    real_clip_load = clip_model.load

    def clip_load(name, device='cpu', jit=False, download_root=None):
        # OpenAI publishes TorchScript archives, which pyiqa's loader reads; a plain
        # state-dict file trips its fallback (it re-reads a consumed handle).
        path = clip_download(clip_model._MODELS[name], None) if name in clip_model._MODELS else name
        try:
            return real_clip_load(path, device, jit, download_root)
        except (EOFError, RuntimeError):
            try:
                state = torch.load(path, map_location='cpu', weights_only=True)
                model = clip_model.build_model(state).to(device)
            except Exception as err:
                raise MetricWeightsError(
                    f'{path} is neither an OpenAI CLIP {name} TorchScript archive nor its '
                    f'state dict (wrong or corrupt file; re-download it): '
                    f'{type(err).__name__}: {str(err)[:300]}') from err
            return model.float() if str(device) == 'cpu' else model

    real_create_model = timm.create_model

    def create_model(*args, **kwargs):
        kwargs['pretrained'] = False  # overwritten by the strict metric checkpoint
        return real_create_model(*args, **kwargs)

    # LIQE caches computed text features next to the weights; a read-only
    # weights folder (shared mount) gets a per-user cache instead.
    cache_dir = pyiqa_dir
    if not os.access(pyiqa_dir if os.path.isdir(pyiqa_dir) else weights_dir, os.W_OK):
        cache_dir = os.path.join(os.path.expanduser('~'), '.cache', 'icmsr', 'pyiqa')
    os.makedirs(cache_dir, exist_ok=True)

    checked_loader = _checked_loader(arch_util.load_pretrained_network, weights_dir)
    targets = [
        (download_util, 'DEFAULT_CACHE_DIR', pyiqa_dir),
        (download_util, 'download_url_to_file', _refuse_network),
        (torch.hub, 'download_url_to_file', _refuse_network),
        (clip_model, '_download', clip_download),
        (timm, 'create_model', create_model),
        (socket.socket, 'connect', _refuse_network),
        (socket.socket, 'connect_ex', _refuse_network),
        (socket, 'create_connection', _refuse_network),
    ]
    # pyiqa's arch modules import these helpers by name; patch each binding.
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith('pyiqa.') or mod is None:
            continue
        if getattr(mod, 'load_file_from_url', None) is download_util.load_file_from_url:
            targets.append((mod, 'load_file_from_url', load_file_from_url))
        if getattr(mod, 'load', None) is real_clip_load:
            targets.append((mod, 'load', clip_load))
        if getattr(mod, 'load_pretrained_network', None) is arch_util.load_pretrained_network:
            targets.append((mod, 'load_pretrained_network', checked_loader))
        if isinstance(getattr(mod, 'DEFAULT_CACHE_DIR', None), str) and mod is not download_util:
            targets.append((mod, 'DEFAULT_CACHE_DIR', cache_dir))
    # The raw setting, not get_dir(): None means "follow $TORCH_HOME", and restoring a
    # resolved path would pin the hub folder for the rest of the process.
    previous_hub = getattr(torch.hub, '_hub_dir', None)
    previous_env = {k: os.environ.get(k) for k in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')}
    torch.hub.set_dir(hub_dir)
    os.environ.update({k: '1' for k in previous_env})
    originals = {load_file_from_url: download_util.load_file_from_url,
                 checked_loader: arch_util.load_pretrained_network, clip_load: real_clip_load}
    try:
        with _patched(targets):
            yield
    finally:
        for mod_name, mod in list(sys.modules.items()):
            if mod_name.startswith('pyiqa.') and mod is not None:
                for attr in ('load_file_from_url', 'load_pretrained_network', 'load'):
                    value = getattr(mod, attr, None)
                    if callable(value) and value in originals:
                        setattr(mod, attr, originals[value])
        torch.hub._hub_dir = previous_hub
        for k, v in previous_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
