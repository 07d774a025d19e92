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
    """LPIPS distance (``lpips.LPIPS``) that never downloads.

    The calibrated linear heads ship inside the ``lpips`` wheel; torchvision loads
    the ImageNet backbone from its cache (:func:`backbone_cache_path`; copy
    ``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth`` there). When that file is
    absent the backbone stays random with a loud warning (tests do this) - or an
    error with ``require_backbone=True``, which real training configs should set.

    Args:
        net: backbone, ``'vgg'`` (OSEDiff's training loss) or ``'alex'``.
        backbone_weights: ``'auto'`` (torchvision's cache) or None (random backbone on purpose).
        require_backbone: raise instead of warning when the weights are missing.
    """

    def __init__(self, net: str = 'vgg', backbone_weights: Optional[str] = 'auto',
                 require_backbone: bool = False) -> None:
        super().__init__()
        if net not in _BACKBONES:
            raise ValueError(f'LPIPSLoss net must be one of {sorted(_BACKBONES)}, got {net!r}')
        if backbone_weights not in ('auto', None):
            raise ValueError(f"LPIPSLoss backbone_weights must be 'auto' or None, got "
                             f'{backbone_weights!r}: copy the file to {backbone_cache_path(net)}.')
        import lpips
        path = backbone_cache_path(net)
        self.backbone_loaded = backbone_weights == 'auto' and os.path.isfile(path)
        if not self.backbone_loaded and (backbone_weights or require_backbone):
            msg = (f'LPIPS({net}) backbone weights not found at {path!r}: the backbone is '
                   f'RANDOM and the loss is not the published LPIPS. Put torchvision\'s '
                   f'ImageNet weights there ($TORCH_HOME/hub/checkpoints).')
            if require_backbone:
                raise FileNotFoundError(msg)
            warnings.warn(msg, stacklevel=2)
        with warnings.catch_warnings():
            # lpips still uses torchvision's deprecated ``pretrained=`` argument.
            warnings.filterwarnings('ignore', message='.*(pretrained|weight enum).*')
            # pnet_rand: a random backbone, so torchvision never tries to download one.
            self.lpips = lpips.LPIPS(pretrained=True, net=net, pnet_rand=not self.backbone_loaded,
                                     verbose=False)
        self.lpips.requires_grad_(False).eval()

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
