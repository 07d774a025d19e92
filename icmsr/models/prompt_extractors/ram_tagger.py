"""RAMTagger: tags from the Recognize Anything model (RAM, RAM++) or DAPE.

OSEDiff (which ICM-SR follows) prompts its teacher and generator with RAM tags of
the GT crop at every training iteration, and at test with the tags DAPE (RAM
fine-tuned on degraded images, from SeeSR) gives for the LQ image.

The ``ram`` package is not on PyPI and declares none of its dependencies; it is
imported when the tagger is first used (see docs/model.md, "Prompt taggers"):

* dependencies: ``pip install -e '.[prompts]'`` (timm, fairscale, loralib, scipy);
* DAPE and the paper configs: OSEDiff's copy of ``ram``, which adds
  ``ram.models.ram_lora`` (``ram(pretrained=RAM, pretrained_condition=DAPE)``) and
  also has ``ram.models.ram``: clone https://github.com/cswry/OSEDiff and put the
  clone on ``PYTHONPATH``;
* RAM / RAM++ alone: ``pip install --no-deps git+https://github.com/xinyu1205/recognize-anything.git``.

Both copies were written for transformers 4; :mod:`icmsr.compat` adapts them to
the toolkit's transformers when the model is built (not on ``import icmsr``).
"""
import contextlib
import importlib
import importlib.util
import io
import os
import pickle
import sys
import warnings
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from icmsr import compat
from icmsr.registry import MODELS
from .base import PromptExtractor, weights_from_env

RAM_URL = 'https://huggingface.co/spaces/xinyu1205/recognize-anything/blob/main/ram_swin_large_14m.pth'
RAM_PLUS_URL = ('https://huggingface.co/xinyu1205/recognize-anything-plus-model/blob/main/'
                'ram_plus_swin_large_14m.pth')
DAPE_URL = ('DAPE.pth of SeeSR (linked from the README of https://github.com/cswry/OSEDiff: '
            'https://drive.google.com/file/d/1KIV6VewwO2eDC9g4Gcvgm-a0LDI7Lmwm)')
DEPS_INSTALL = "pip install -e '.[prompts]' (or pip install -r requirements/prompts.txt)"
RAM_INSTALL = ('pip install --no-deps git+https://github.com/xinyu1205/recognize-anything.git, '
               f'then {DEPS_INSTALL}')
DAPE_INSTALL = ('git clone https://github.com/cswry/OSEDiff and add the clone to PYTHONPATH (its '
                f'ram/ folder has ram/models/ram_lora.py), then {DEPS_INSTALL}')
#: Packages the ``ram`` code imports that it does not declare (the ``prompts`` extra).
PROMPT_DEPENDENCIES = ('timm', 'fairscale', 'loralib', 'scipy')
#: BERT tokenizer of RAM's text branch; ``$ICMSR_BERT`` or ``tokenizer=`` name another.
DEFAULT_TOKENIZER = 'bert-base-uncased'

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


def ram_package_dirs() -> List[str]:
    """Folders of the importable ``ram`` package, found without importing it.

    Returns:
        The package's folders (empty when there is no ``ram`` on the path).
    """
    if 'ram' in sys.modules:  # imported already (or blocked with None)
        spec = getattr(sys.modules['ram'], '__spec__', None)
    else:
        spec = importlib.util.find_spec('ram')
    if spec is None:
        return []
    return list(spec.submodule_search_locations or [])


def _versions() -> str:
    """Installed versions of the packages the ``ram`` code imports, for error messages."""
    from importlib.metadata import PackageNotFoundError, version
    found = []
    for name in ('transformers', 'timm', 'fairscale', 'loralib'):
        try:
            found.append(f'{name} {version(name)}')
        except PackageNotFoundError:
            found.append(f'no {name}')
    return ', '.join(found)


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

    Weights are read on the CPU (``map_location``) and, unless ``trust_checkpoint``,
    with torch's ``weights_only`` unpickler: both real layouts (RAM's
    ``{'model': state_dict}``, DAPE's flat state dict) are plain dicts of tensors and
    load that way; a file that pickles other objects is refused with a message.

    Args:
        variant: ``'ram'`` (default), ``'ram_plus'`` or ``'dape'``.
        weights: RAM / RAM++ weights file; None reads ``$ICMSR_RAM`` (``$ICMSR_RAM_PLUS``
            for RAM++). DAPE is built on RAM's weights too.
        condition_weights: DAPE's fine-tuned weights (``variant='dape'`` only);
            None reads ``$ICMSR_DAPE``.
        tokenizer: BERT tokenizer of RAM's text branch, a hub id or a folder; None
            reads ``$ICMSR_BERT``, else ``'bert-base-uncased'``. Both variants use it.
        image_size: RAM's input size (384 for the Swin-L checkpoints).
        vit: RAM's backbone name (``'swin_l'``).
        separator: text between tags.
        half: run in float16 on CUDA (OSEDiff does); float32 on CPU always.
        antialias: antialiased resize (False: OSEDiff's).
        batch_size: most images per forward pass.
        trust_checkpoint: unpickle the weights files fully (only for files you trust).
    """

    def __init__(self, variant: str = 'ram', weights: Optional[str] = None,
                 condition_weights: Optional[str] = None, tokenizer: Optional[str] = None,
                 image_size: int = 384, vit: str = 'swin_l', separator: str = ', ',
                 half: bool = True, antialias: bool = False, batch_size: int = 8,
                 trust_checkpoint: bool = False) -> None:
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
        self.tokenizer = tokenizer or os.environ.get('ICMSR_BERT') or DEFAULT_TOKENIZER
        if self.tokenizer.startswith(('/', '.', '~')) and not os.path.isdir(
                os.path.expanduser(self.tokenizer)):
            raise FileNotFoundError(
                f'RAMTagger tokenizer {self.tokenizer!r} (from tokenizer= or ICMSR_BERT) is not a '
                f'folder; point it at a saved BERT tokenizer or use the hub id {DEFAULT_TOKENIZER!r}.')
        self.tokenizer = os.path.expanduser(self.tokenizer)
        self._check_package(spec)
        self.image_size = int(image_size)
        self.vit = vit
        self.separator = separator
        self.half = half
        self.antialias = antialias
        self.trust_checkpoint = bool(trust_checkpoint)

    def _check_package(self, spec: Dict[str, str]) -> None:
        """Find ``ram`` (and DAPE's ``ram/models/ram_lora.py``) without importing anything."""
        dirs = ram_package_dirs()  # looked up, not imported: that stays lazy
        if not dirs:
            raise ImportError(f'RAMTagger({self.variant!r}) needs the Recognize Anything package '
                              f"'ram' (not on PyPI), which is not installed. Install it: "
                              f'{spec["install"]}.')
        parts = spec['module'].split('.')[1:]
        if parts and not any(os.path.isfile(os.path.join(d, *parts) + '.py') or
                             os.path.isdir(os.path.join(d, *parts)) for d in dirs):
            where = os.path.join(dirs[0], *parts) + '.py'
            raise ImportError(f'RAMTagger({self.variant!r}) needs {spec["module"]!r}, but the '
                              f"'ram' package found at {dirs[0]} has no {where}. Install the "
                              f'right copy: {spec["install"]}.')

    def _import_module(self) -> Any:
        """Import the variant's ``ram`` module with the compatibility shims; explain failures."""
        spec = VARIANTS[self.variant]
        where = ', '.join(ram_package_dirs()) or 'nowhere'
        compat.provide_ram_transformers_names()
        try:
            with warnings.catch_warnings():  # ram imports timm's old module names
                warnings.filterwarnings('ignore', category=FutureWarning, module='timm')
                module = importlib.import_module(spec['module'])
        except ModuleNotFoundError as err:
            missing = (err.name or '').split('.')[0]
            if missing in PROMPT_DEPENDENCIES:
                raise ImportError(f"RAMTagger({self.variant!r}): the 'ram' package at {where} "
                                  f'imports {err.name!r}, which is not installed. Install the '
                                  f'tagger dependencies: {DEPS_INSTALL}.') from err
            raise ImportError(f'RAMTagger({self.variant!r}): importing {spec["module"]!r} from '
                              f'{where} failed: {err}. Install: {spec["install"]}.') from err
        except ImportError as err:
            raise ImportError(
                f"RAMTagger({self.variant!r}): the 'ram' package at {where} is installed but does "
                f'not import: {err} (here: {_versions()}). icmsr.compat adapts the Recognize '
                'Anything code of xinyu1205/recognize-anything and of OSEDiff to these versions; '
                'this copy needs something else.') from err
        for name in ('ram.models.bert', 'ram.models.bert_lora'):
            if name in sys.modules:
                compat.adapt_ram_bert_module(sys.modules[name])
        return module

    def _checkpoint_loading(self) -> Any:
        """The toolkit's trust rule for the weights files, as a context manager."""
        return (compat.trusted_checkpoint_loading() if self.trust_checkpoint
                else compat.untrusted_checkpoint_loading())

    def _refused(self, path: str, err: BaseException) -> pickle.UnpicklingError:
        return pickle.UnpicklingError(compat.checkpoint_refusal_message(
            path, err, flag='trust_checkpoint=True in the RAMTagger config'))

    def build_model(self) -> torch.nn.Module:
        """Build the variant's model on the CPU with its weights, in eval mode, frozen.

        Returns:
            The ``ram`` model.
        """
        factory = getattr(self._import_module(), VARIANTS[self.variant]['factory'])
        # The ram code prints a line per tied layer and per checkpoint; keep logs readable.
        with self._checkpoint_loading(), compat.ram_tokenizer_from(self.tokenizer), \
                contextlib.redirect_stdout(io.StringIO()):
            try:
                model = factory(pretrained=self.weights, image_size=self.image_size, vit=self.vit)
            except pickle.UnpicklingError as err:
                raise self._refused(self.weights, err) from err
            except OSError as err:
                if 'tokenizer' not in str(err).lower():
                    raise
                raise OSError(f'RAMTagger could not load the BERT tokenizer {self.tokenizer!r} '
                              f'(tokenizer= / ICMSR_BERT / default {DEFAULT_TOKENIZER!r}): {err}. '
                              'Without the hub, save it once (BertTokenizer.from_pretrained('
                              "'bert-base-uncased').save_pretrained(DIR)) and set "
                              'ICMSR_BERT=DIR.') from err
        if self.condition_weights is not None:
            self._load_condition(model, self.condition_weights)
        return model.eval().requires_grad_(False)

    def _load_condition(self, model: torch.nn.Module, path: str) -> None:
        """Load DAPE's flat state dict over the model (on the CPU, the toolkit's trust rule)."""
        with self._checkpoint_loading():
            try:
                state = torch.load(path, map_location='cpu')
            except pickle.UnpicklingError as err:
                raise self._refused(path, err) from err
        if not isinstance(state, dict) or not set(state) & set(model.state_dict()):
            raise ValueError(f"RAMTagger('dape'): {path} (condition_weights / ICMSR_DAPE) holds no "
                             "parameter of the DAPE model; expected SeeSR's DAPE.pth.")
        # strict=False as in ram_lora: DAPE.pth need not repeat RAM's own weights.
        model.load_state_dict(state, strict=False)

    def load(self, device: torch.device) -> None:
        """Build the tagger on ``device`` (once; later calls only move it)."""
        if self.model is None:
            self.model = self.build_model()
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
