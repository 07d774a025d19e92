"""Prompt sources and the frozen text encoder."""
from typing import Any, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from icmsr.registry import MODELS, build_or_use

# OSEDiff's negative prompt for the teacher's classifier-free guidance (its training
# script's ``--neg_prompt``, character for character).
DEFAULT_NEGATIVE_PROMPT = (
    'painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, '
    '3D render, unreal engine, blurring, dirty, messy, worst quality, low quality, frames, '
    'watermark, signature, jpeg artifacts, deformed, lowres, over-smooth')

_SOURCES = ('caption', 'fixed', 'empty', 'extractor')
_IMAGE_KEYS = ('gt', 'lq')


@MODELS.register_module()
class PromptEncoder(nn.Module):
    """Turn each image's prompt into CLIP text embeddings (frozen encoder).

    Prompt sources (``source``):

    * ``'caption'`` - the ``prompt`` metainfo of each data sample (datasets fill
      it from caption files; missing/empty captions give the empty prompt);
    * ``'fixed'`` - ``fixed_prompt`` for every image;
    * ``'empty'`` - ``''`` for every image (a config must say so explicitly);
    * ``'extractor'`` - a prompt extractor (``RAMTagger``, ``HFCaptioner``) run on
      the batch's images: in training on ``images[image]`` (OSEDiff: RAM tags of
      the GT crop, every iteration), in eval mode on ``images[test_image]`` with
      ``test_extractor`` (OSEDiff: DAPE tags of the LQ). The extractors are
      built (and their weights files checked) at construction.

    The negative prompt of the teacher's CFG is encoded once at construction and
    kept as a non-persistent buffer (it follows ``.to(device)``, stays out of
    checkpoints).

    Args:
        text_encoder: ``CLIPTextModel`` or its config (``type='SDTextEncoder'``).
        tokenizer: ``CLIPTokenizer`` or its config (``type='SDTokenizer'``).
        source: prompt source, one of ``'caption'``, ``'fixed'``, ``'empty'``, ``'extractor'``.
        fixed_prompt: the prompt for ``source='fixed'``.
        suffix: text appended to every non-empty prompt (e.g. ``', high quality'``).
        negative_prompt: negative prompt for CFG.
        extractor: prompt extractor (config, preset name or object) used in training.
        image: which images the training extractor reads, ``'gt'`` or ``'lq'``.
        test_extractor: extractor in eval mode (None: ``extractor``).
        test_image: which images the eval extractor reads (default ``'lq'``).
    """

    def __init__(self, text_encoder: Any, tokenizer: Any, source: str = 'caption',
                 fixed_prompt: str = '', suffix: str = '',
                 negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
                 extractor: Any = None, image: str = 'gt', test_extractor: Any = None,
                 test_image: str = 'lq') -> None:
        super().__init__()
        if source not in _SOURCES:
            raise ValueError(f'PromptEncoder source must be one of {_SOURCES}, got {source!r}')
        for key, value in (('image', image), ('test_image', test_image)):
            if value not in _IMAGE_KEYS:
                raise ValueError(f'PromptEncoder {key} must be one of {_IMAGE_KEYS}, got {value!r}')
        if source == 'extractor' and extractor is None:
            raise ValueError("PromptEncoder source='extractor' needs extractor=..., e.g. "
                             "text=dict(source='extractor', extractor=dict(type='RAMTagger'), "
                             "image='gt').")
        if source != 'extractor' and (extractor is not None or test_extractor is not None):
            raise ValueError(f"PromptEncoder: extractor is set but source={source!r}; use "
                             "source='extractor', or replace the inherited text settings with "
                             f"text=dict(_delete_=True, source={source!r}).")
        self.extractor = self.test_extractor = None
        if source == 'extractor':
            from .prompt_extractors import build_prompt_extractor
            self.extractor = build_prompt_extractor(extractor)
            self.test_extractor = (self.extractor if test_extractor is None
                                   else build_prompt_extractor(test_extractor))
        self.image, self.test_image = image, test_image
        self.text_encoder = build_or_use(text_encoder)
        self.text_encoder.requires_grad_(False).eval()
        self.tokenizer = build_or_use(tokenizer)
        self.source = source
        self.fixed_prompt = fixed_prompt
        self.suffix = suffix
        self.negative_prompt = negative_prompt
        self.register_buffer('negative_embeds', self.encode([negative_prompt]),
                             persistent=False)

    def train(self, mode: bool = True) -> 'PromptEncoder':
        """Keep the frozen encoder in eval mode whatever the model's mode."""
        super().train(mode)
        self.text_encoder.eval()
        return self

    def prompts_for(self, data_samples: Optional[Sequence[Any]], batch_size: int,
                    images: Optional[Mapping[str, Optional[torch.Tensor]]] = None) -> List[str]:
        """Pick the prompt strings of a batch according to ``source``.

        Args:
            data_samples: the batch's ``SRDataSample``s (may be None).
            batch_size: number of images.
            images: ``{'gt': (B, 3, H, W) in [0, 1] or None, 'lq': ...}``; needed by
                ``source='extractor'``, ignored otherwise.

        Returns:
            One prompt per image.
        """
        if self.source == 'extractor':
            prompts = self._extract(batch_size, images)
        elif self.source == 'empty':
            prompts = [''] * batch_size
        elif self.source == 'fixed':
            prompts = [self.fixed_prompt] * batch_size
        else:
            samples = list(data_samples or [])
            prompts = [str(s.metainfo.get('prompt', '') or '') for s in samples]
            prompts += [''] * (batch_size - len(prompts))
        return [p + self.suffix if p else p for p in prompts]

    def _extract(self, batch_size: int,
                 images: Optional[Mapping[str, Optional[torch.Tensor]]]) -> List[str]:
        """Run the training or eval extractor on the configured images."""
        key, extractor, name = ((self.image, self.extractor, 'image') if self.training
                                else (self.test_image, self.test_extractor, 'test_image'))
        batch = (images or {}).get(key)
        if batch is None:
            raise ValueError(
                f"PromptEncoder(source='extractor', {name}={key!r}) needs the {key.upper()} "
                f"batch: call text(data_samples, batch_size, images=dict(gt=..., lq=...)) with "
                f"images[{key!r}] set (B, 3, H, W) in [0, 1].")
        if batch.shape[0] != batch_size:
            raise ValueError(f'PromptEncoder: images[{key!r}] holds {batch.shape[0]} images, '
                             f'batch_size is {batch_size}.')
        return extractor(batch)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Encode prompts to ``(B, 77, D)`` hidden states (last layer, as SD).

        Args:
            prompts: strings.

        Returns:
            Embeddings on the text encoder's device and dtype.
        """
        ids = self.tokenizer(list(prompts), padding='max_length',
                             max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors='pt').input_ids
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(ids.to(device))[0]

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embeddings of prompt strings given by the caller, ``suffix`` added to non-empty ones.

        Args:
            prompts: one string per image.

        Returns:
            ``(B, 77, D)`` embeddings.
        """
        return self.encode([p + self.suffix if p else p for p in prompts])

    def forward(self, data_samples: Optional[Sequence[Any]], batch_size: int,
                images: Optional[Mapping[str, Optional[torch.Tensor]]] = None) -> torch.Tensor:
        """Embeddings of the batch's prompts (see :meth:`prompts_for`).

        Args:
            data_samples: the batch's data samples (may be None).
            batch_size: number of images.
            images: ``{'gt': ..., 'lq': ...}`` in ``[0, 1]`` (``source='extractor'``).

        Returns:
            ``(B, 77, D)`` embeddings.
        """
        return self.encode(self.prompts_for(data_samples, batch_size, images))

    def negative(self, batch_size: int) -> torch.Tensor:
        """The cached negative-prompt embeddings repeated ``batch_size`` times."""
        return self.negative_embeds.expand(batch_size, -1, -1)
