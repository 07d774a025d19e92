"""RAMTagger: tags from the Recognize Anything model (RAM, RAM++) or DAPE.

OSEDiff (which ICM-SR follows) prompts its teacher and generator with RAM tags of
the GT crop at every training iteration, and at test with the tags DAPE (RAM
fine-tuned on degraded images, from SeeSR) gives for the LQ image.

The ``ram`` package is not on PyPI; it is imported when the tagger is first used:

* RAM / RAM++: ``pip install git+https://github.com/xinyu1205/recognize-anything.git``
  (``ram.models.ram`` / ``ram.models.ram_plus``);
* DAPE: the copy of ``ram`` shipped with SeeSR and OSEDiff, which adds
  ``ram.models.ram_lora`` (``ram(pretrained=RAM, pretrained_condition=DAPE)``):
  clone https://github.com/cswry/OSEDiff and put the clone on ``PYTHONPATH``.
"""
import importlib
import importlib.util
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from icmsr.registry import MODELS
from .base import PromptExtractor, weights_from_env

RAM_URL = 'https://huggingface.co/spaces/xinyu1205/recognize-anything/blob/main/ram_swin_large_14m.pth'
RAM_PLUS_URL = ('https://huggingface.co/xinyu1205/recognize-anything-plus-model/blob/main/'
                'ram_plus_swin_large_14m.pth')
DAPE_URL = ('DAPE.pth of SeeSR (linked from the README of https://github.com/cswry/OSEDiff: '
            'https://drive.google.com/file/d/1KIV6VewwO2eDC9g4Gcvgm-a0LDI7Lmwm)')
RAM_INSTALL = 'pip install git+https://github.com/xinyu1205/recognize-anything.git'
DAPE_INSTALL = ('git clone https://github.com/cswry/OSEDiff and add the clone to PYTHONPATH '
                '(its ram/ folder has ram.models.ram_lora)')

#: variant -> (module, factory, weights env var, download, install hint)
VARIANTS: Dict[str, Dict[str, str]] = {
    'ram': dict(module='ram.models', factory='ram', env='ICMSR_RAM', url=RAM_URL,
                install=RAM_INSTALL),
    'ram_plus': dict(module='ram.models', factory='ram_plus', env='ICMSR_RAM_PLUS',
                     url=RAM_PLUS_URL, install=RAM_INSTALL),
    'dape': dict(module='ram.models.ram_lora', factory='ram', env='ICMSR_RAM', url=RAM_URL,
                 install=DAPE_INSTALL),
}
_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics of RAM's get_transform
_STD = (0.229, 0.224, 0.225)


@MODELS.register_module()
class RAMTagger(PromptExtractor):
    """Image tags ("cat, grass, sky") from RAM, RAM++ or DAPE, one string per image.

    Preprocessing is OSEDiff's: bilinear resize of the ``[0, 1]`` batch to
    ``image_size`` squared without antialiasing (torchvision's ``Resize`` on tensors
    in the torchvision 0.15 OSEDiff pins), ImageNet normalisation, half precision on
    CUDA. ``antialias=True`` is closer to RAM's own ``get_transform`` (PIL resize). Tags come from the
    model's ``generate_tag`` (what ``ram.inference_ram`` wraps; it returns only
    the first image of a batch) and are joined with ``separator`` (OSEDiff's copy
    of RAM joins with ``', '``, the upstream package with ``' | '``).

    Args:
        variant: ``'ram'`` (default), ``'ram_plus'`` or ``'dape'``.
        weights: RAM / RAM++ weights file; None reads ``$ICMSR_RAM`` (``$ICMSR_RAM_PLUS``
            for RAM++). DAPE is built on RAM's weights too.
        condition_weights: DAPE's fine-tuned weights (``variant='dape'`` only);
            None reads ``$ICMSR_DAPE``.
        image_size: RAM's input size (384 for the Swin-L checkpoints).
        vit: RAM's backbone name (``'swin_l'``).
        separator: text between tags.
        half: run in float16 on CUDA (OSEDiff does); float32 on CPU always.
        antialias: antialiased resize (False: OSEDiff's).
        batch_size: most images per forward pass.
    """

    def __init__(self, variant: str = 'ram', weights: Optional[str] = None,
                 condition_weights: Optional[str] = None, image_size: int = 384,
                 vit: str = 'swin_l', separator: str = ', ', half: bool = True,
                 antialias: bool = False, batch_size: int = 8) -> None:
        super().__init__(batch_size)
        if variant not in VARIANTS:
            raise ValueError(f'RAMTagger variant must be one of {sorted(VARIANTS)}, got {variant!r}.')
        spec = VARIANTS[variant]
        self.variant = variant
        # Checked now, so a run stops at build time rather than at the first batch.
        self.weights = weights_from_env(weights, spec['env'], f'RAMTagger({variant!r}) weights',
                                        spec['url'])
        self.condition_weights = None
        if variant == 'dape':
            self.condition_weights = weights_from_env(
                condition_weights, 'ICMSR_DAPE', "RAMTagger('dape') fine-tuned weights", DAPE_URL)
        elif condition_weights is not None:
            raise ValueError("RAMTagger: condition_weights (DAPE) need variant='dape'.")
        top = spec['module'].split('.')[0]
        if importlib.util.find_spec(top) is None:  # looked up, not imported: that stays lazy
            raise ImportError(f'RAMTagger({variant!r}) needs the Recognize Anything package '
                              f'{top!r}, which is not on PyPI. Install it: {spec["install"]}.')
        self.image_size = int(image_size)
        self.vit = vit
        self.separator = separator
        self.half = half
        self.antialias = antialias

    def _factory(self) -> Any:
        """Import the ``ram`` package lazily; say how to install it when absent."""
        spec = VARIANTS[self.variant]
        try:
            module = importlib.import_module(spec['module'])
        except ImportError as err:
            raise ImportError(
                f'RAMTagger({self.variant!r}) needs the Recognize Anything package module '
                f'{spec["module"]!r}, which is not on PyPI ({err}). Install it: '
                f'{spec["install"]}.') from err
        return getattr(module, spec['factory'])

    def load(self, device: torch.device) -> None:
        """Build the tagger on ``device`` (once; later calls only move it)."""
        if self.model is None:
            kwargs = dict(pretrained=self.weights, image_size=self.image_size, vit=self.vit)
            if self.condition_weights is not None:
                kwargs['pretrained_condition'] = self.condition_weights
            model = self._factory()(**kwargs)
            self.model = model.eval().requires_grad_(False)
        dtype = torch.float16 if self.half and device.type == 'cuda' else torch.float32
        self.model.to(device=device, dtype=dtype)
        self.dtype = dtype

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to ``image_size`` squared and normalise, in the model's dtype.

        Args:
            images: float ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            RAM's input batch.
        """
        x = F.interpolate(images, size=(self.image_size, self.image_size), mode='bilinear',
                          align_corners=False, antialias=self.antialias)
        mean = torch.tensor(_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_STD, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(getattr(self, 'dtype', torch.float32))

    def extract(self, images: torch.Tensor) -> List[str]:
        """Tags of one chunk, joined with ``separator``."""
        tags = self.model.generate_tag(self.preprocess(images))[0]
        out = []
        for text in tags:
            parts = [t.strip() for t in str(text).replace(' | ', '|').replace(', ', '|').split('|')]
            out.append(self.separator.join(t for t in parts if t))
        return out
