"""Reconstruction losses: LPIPS built offline-first."""
import os
import warnings
from typing import Optional

import torch
import torch.nn as nn

from icmsr.registry import MODELS

# torchvision constructors and weight enums of the LPIPS backbones.
_BACKBONES = {
    'vgg': ('vgg16', 'VGG16_Weights'),
    'alex': ('alexnet', 'AlexNet_Weights'),
    'squeeze': ('squeezenet1_1', 'SqueezeNet1_1_Weights'),
}


def backbone_cache_path(net: str) -> str:
    """Where torchvision caches the ImageNet weights of an LPIPS backbone.

    Args:
        net: ``'vgg'``, ``'alex'`` or ``'squeeze'``.

    Returns:
        ``$TORCH_HOME/hub/checkpoints/<torchvision file name>`` (the file
        ``torchvision.models.<net>(weights='IMAGENET1K_V1')`` downloads).
    """
    import torchvision.models as tvm
    _, enum_name = _BACKBONES[net]
    url = getattr(tvm, enum_name).IMAGENET1K_V1.url
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(url))


@MODELS.register_module()
class LPIPSLoss(nn.Module):
    """LPIPS distance (lpips package) that never downloads.

    The calibrated linear heads ship inside the ``lpips`` wheel. The ImageNet
    backbone comes from ``backbone_weights``: a file path, or ``'auto'`` = the
    torchvision cache file (see :func:`backbone_cache_path`; copy
    ``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth`` there). When absent the
    backbone stays random with a loud warning (tests do this) - or an error with
    ``require_backbone=True``, which real training configs should set.

    Args:
        net: backbone, ``'vgg'`` (OSEDiff's training loss) or ``'alex'``.
        backbone_weights: ``'auto'``, a path, or None (random backbone on purpose).
        require_backbone: raise instead of warning when the weights are missing.
    """

    def __init__(self, net: str = 'vgg', backbone_weights: Optional[str] = 'auto',
                 require_backbone: bool = False) -> None:
        super().__init__()
        if net not in _BACKBONES:
            raise ValueError(f'LPIPSLoss net must be one of {sorted(_BACKBONES)}, got {net!r}')
        import lpips
        self.net_name = net
        # pnet_rand=True: build the backbone without torchvision downloading it.
        with warnings.catch_warnings():
            # lpips still uses torchvision's deprecated ``pretrained=`` argument.
            warnings.filterwarnings('ignore', message='.*(pretrained|weight enum).*')
            self.lpips = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
        self.backbone_loaded = False
        path = backbone_cache_path(net) if backbone_weights == 'auto' else backbone_weights
        if path is not None and os.path.isfile(path):
            self._load_backbone(path)
            self.backbone_loaded = True
        elif path is not None or require_backbone:
            msg = (f'LPIPS({net}) backbone weights not found at {path!r}: the backbone is '
                   f'RANDOM and the loss is not the published LPIPS. Put torchvision\'s '
                   f'ImageNet weights there (file {os.path.basename(backbone_cache_path(net))} '
                   f'in $TORCH_HOME/hub/checkpoints) or set backbone_weights to the file.')
            if require_backbone:
                raise FileNotFoundError(msg)
            warnings.warn(msg, stacklevel=2)
        self.lpips.requires_grad_(False).eval()

    def _load_backbone(self, path: str) -> None:
        import torchvision.models as tvm
        ctor, _ = _BACKBONES[self.net_name]
        ref = getattr(tvm, ctor)(weights=None)
        ref.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
        # lpips keeps torchvision's layer indices inside its slices.
        for slice_ in self.lpips.net.children():
            for idx, layer in slice_.named_children():
                layer.load_state_dict(ref.features[int(idx)].state_dict())

    def train(self, mode: bool = True) -> 'LPIPSLoss':
        """Stay in eval mode (dropout in the heads off), whatever the model's mode."""
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of images in ``[-1, 1]``.

        Args:
            pred: ``(B, 3, H, W)``.
            target: ``(B, 3, H, W)``.

        Returns:
            ``(B,)`` distances.
        """
        return self.lpips(pred.float(), target.float()).flatten()
