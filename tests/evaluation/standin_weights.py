"""Stand-in metric weight files with the structure of the published ones.

The real checkpoints cannot be downloaded here. Each stand-in holds a state dict
with the same keys and shapes as the published file, filled with random values.
The key/shape lists come from the networks built on the ``meta`` device (no
memory, no download). Every tensor is a stride-0 view of a small random vector,
so a 138M-parameter VGG16 stand-in is a few kilobytes on disk and still loads
through ``load_state_dict`` like the real file.
"""
import os
from typing import Callable, Dict

import torch


def _fill(shapes: Dict[str, torch.Tensor], seed: int = 0) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, t in shapes.items():
        if not t.dtype.is_floating_point:
            out[k] = torch.zeros(t.shape, dtype=t.dtype)
            continue
        last = t.shape[-1] if t.dim() else 1
        base = torch.rand(last, generator=gen, dtype=t.dtype) * 0.02 + 0.01
        out[k] = base.expand(t.shape) if t.dim() else base[0].clone()
    return out


def _meta_state(build: Callable[[], torch.nn.Module]) -> Dict[str, torch.Tensor]:
    # Some builders read values (drop-path rates from linspace(...).item()): make
    # those small tensors real while parameters stay on meta.
    real_linspace = torch.linspace
    torch.linspace = lambda *a, **k: real_linspace(*a, **dict(k, device='cpu'))
    try:
        with torch.device('meta'):
            return build().state_dict()
    finally:
        torch.linspace = real_linspace


def _clip_rn50():
    from pyiqa.archs.clip_model import CLIP
    return CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12)


def _clip_vitb32():
    from pyiqa.archs.clip_model import CLIP
    return CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)


def _fid_inception():
    import pyiqa.archs.inception as inc
    original = inc.load_pretrained_network
    inc.load_pretrained_network = lambda *a, **k: None  # shapes only
    try:
        return inc.fid_inception_v3()
    finally:
        inc.load_pretrained_network = original


def _no_pretrained_timm(build: Callable[[], torch.nn.Module]) -> Callable[[], torch.nn.Module]:
    def wrapped():
        import timm
        real = timm.create_model
        timm.create_model = lambda *a, **k: real(*a, **dict(k, pretrained=False))
        try:
            return build()
        finally:
            timm.create_model = real
    return wrapped


def _maniqa():
    from pyiqa.archs.maniqa_arch import MANIQA
    return MANIQA(train_dataset='pipal', pretrained=False)


def _topiq():
    from pyiqa.archs.topiq_arch import CFANet
    return CFANet(semantic_model_name='resnet50', model_name='cfanet_nr_koniq_res50',
                  use_ref=False, pretrained=False)


def _musiq():
    from pyiqa.archs.musiq_arch import MUSIQ
    return MUSIQ(pretrained=False)


def standin_states() -> Dict[str, object]:
    """Build the content of every stand-in file, keyed by its path in the folder.

    Returns:
        ``{relpath: object to torch.save}``.
    """
    import torchvision
    lpips_chns = [64, 192, 384, 256, 256]
    states: Dict[str, object] = {
        'hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth': _fill(
            {f'lin{i}.model.1.weight': torch.empty(1, c, 1, 1) for i, c in enumerate(lpips_chns)}),
        'hub/checkpoints/alexnet-owt-7be5be79.pth': _fill(
            _meta_state(torchvision.models.alexnet)),
        'hub/pyiqa/DISTS_weights-f5e65c96.pth': _fill(
            {'alpha': torch.empty(1, 1475, 1, 1), 'beta': torch.empty(1, 1475, 1, 1)}),
        'hub/checkpoints/vgg16-397923af.pth': _fill(_meta_state(torchvision.models.vgg16)),
        'hub/pyiqa/pt_inception-2015-12-05-6726825d.pth': _fill(_meta_state(_fid_inception)),
        'hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth': _fill(_meta_state(_musiq)),
        'hub/pyiqa/MANIQA_PIPAL-ae6d356b.pth': _fill(
            _meta_state(_no_pretrained_timm(_maniqa))),
        'hub/clip/RN50.pt': _fill(_meta_state(_clip_rn50)),
        'hub/pyiqa/cfanet_nr_koniq_res50-9a73138b.pth': {
            'params': _fill(_meta_state(_no_pretrained_timm(_topiq)))},
    }
    vitb32 = _fill(_meta_state(_clip_vitb32))
    states['hub/clip/ViT-B-32.pt'] = vitb32
    states['hub/pyiqa/liqe_koniq.pt'] = {'params': {f'clip_model.{k}': v
                                                    for k, v in vitb32.items()}}
    return states


def make_standin_folder(root: str) -> Dict[str, str]:
    """Write every stand-in file under ``root``.

    Args:
        root: The weights folder to create.

    Returns:
        ``{relpath: absolute path}`` of the written files.
    """
    written = {}
    for rel, obj in standin_states().items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(obj, path)
        written[rel] = path
    return written


def make_standin_hf_cache(cache: str) -> None:
    """Write MANIQA's timm ViT-B/8 stand-in into a Hugging Face cache folder.

    The hub client's cache layout (``refs/main`` naming a snapshot); timm reads
    ``pytorch_model.bin`` when no safetensors file is cached.

    Args:
        cache: The folder to use as ``HF_HUB_CACHE``.
    """
    import timm
    repo = os.path.join(cache, 'models--timm--vit_base_patch8_224.augreg2_in21k_ft_in1k')
    os.makedirs(os.path.join(repo, 'refs'), exist_ok=True)
    os.makedirs(os.path.join(repo, 'snapshots', 'standin'), exist_ok=True)
    with open(os.path.join(repo, 'refs', 'main'), 'w') as f:
        f.write('standin')
    state = _fill(_meta_state(lambda: timm.create_model('vit_base_patch8_224', pretrained=False)))
    torch.save(state, os.path.join(repo, 'snapshots', 'standin', 'pytorch_model.bin'))
