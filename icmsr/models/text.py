"""Prompt sources and the frozen text encoder."""
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from icmsr.registry import MODELS, build_or_use

# OSEDiff's negative prompt for the teacher's classifier-free guidance (its training
# script's ``--neg_prompt``, character for character).
DEFAULT_NEGATIVE_PROMPT = (
    'painting, oil painting, illustration, drawing, art, sketch, cartoon, CG Style, '
    '3D render, unreal engine, blurring, dirty, messy, worst quality, low quality, frames, '
    'watermark, signature, jpeg artifacts, deformed, lowres, over-smooth')

_SOURCES = ('caption', 'fixed', 'empty')


@MODELS.register_module()
class PromptEncoder(nn.Module):
    """Turn each image's prompt into CLIP text embeddings (frozen encoder).

    Prompt sources (``source``):

    * ``'caption'`` - the ``prompt`` metainfo of each data sample (datasets fill
      it from caption files; missing/empty captions give the empty prompt);
    * ``'fixed'`` - ``fixed_prompt`` for every image;
    * ``'empty'`` - ``''`` for every image.

    The negative prompt of the teacher's CFG is encoded once at construction and
    kept as a non-persistent buffer (it follows ``.to(device)``, stays out of
    checkpoints).

    Args:
        text_encoder: ``CLIPTextModel`` or its config (``type='SDTextEncoder'``).
        tokenizer: ``CLIPTokenizer`` or its config (``type='SDTokenizer'``).
        source: prompt source, one of ``'caption'``, ``'fixed'``, ``'empty'``.
        fixed_prompt: the prompt for ``source='fixed'``.
        suffix: text appended to every non-empty prompt (e.g. ``', high quality'``).
        negative_prompt: negative prompt for CFG.
    """

    def __init__(self, text_encoder: Any, tokenizer: Any, source: str = 'caption',
                 fixed_prompt: str = '', suffix: str = '',
                 negative_prompt: str = DEFAULT_NEGATIVE_PROMPT) -> None:
        super().__init__()
        if source not in _SOURCES:
            raise ValueError(f'PromptEncoder source must be one of {_SOURCES}, got {source!r}')
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

    def prompts_for(self, data_samples: Optional[Sequence[Any]], batch_size: int) -> List[str]:
        """Pick the prompt strings of a batch according to ``source``.

        Args:
            data_samples: the batch's ``SRDataSample``s (may be None).
            batch_size: number of images.

        Returns:
            One prompt per image.
        """
        if self.source == 'empty':
            prompts = [''] * batch_size
        elif self.source == 'fixed':
            prompts = [self.fixed_prompt] * batch_size
        else:
            samples = list(data_samples or [])
            prompts = [str(s.metainfo.get('prompt', '') or '') for s in samples]
            prompts += [''] * (batch_size - len(prompts))
        return [p + self.suffix if p else p for p in prompts]

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

    def forward(self, data_samples: Optional[Sequence[Any]], batch_size: int) -> torch.Tensor:
        """Embeddings of the batch's prompts (see :meth:`prompts_for`)."""
        return self.encode(self.prompts_for(data_samples, batch_size))

    def negative(self, batch_size: int) -> torch.Tensor:
        """The cached negative-prompt embeddings repeated ``batch_size`` times."""
        return self.negative_embeds.expand(batch_size, -1, -1)
