"""HFCaptioner: captions from any transformers image-to-text model (BLIP, GIT, ...)."""
from typing import Any, Dict, List, Optional

import torch

from icmsr.registry import MODELS
from .base import PromptExtractor


def _auto_model_class() -> Any:
    """transformers' auto class for image-to-text generation (name differs across versions)."""
    import transformers
    for name in ('AutoModelForImageTextToText', 'AutoModelForVision2Seq'):
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise ImportError('this transformers version has neither AutoModelForImageTextToText nor '
                      'AutoModelForVision2Seq; upgrade it: pip install -U transformers')


@MODELS.register_module()
class HFCaptioner(PromptExtractor):
    """A caption per image from a transformers image-to-text model.

    Loads ``AutoProcessor`` and the image-text-to-text auto model from ``model``
    (a hub id such as ``'Salesforce/blip-image-captioning-base'`` or a local folder
    written by ``save_pretrained``) and decodes ``generate`` with the processor.
    Images go to the processor as ``[0, 1]`` tensors (``do_rescale=False``); it
    resizes and normalises them as the model was trained.

    Args:
        model: hub id or local folder.
        text: optional text prefix for conditional captioning (BLIP: ``'a photo of'``).
        max_new_tokens: generation length limit.
        num_beams: beam search width (1: greedy).
        local_files_only: never reach the network (the hub cache or a folder only).
        half: float16 on CUDA.
        batch_size: most images per forward pass.
        model_kwargs: extra ``from_pretrained`` arguments (``revision``, ...).
    """

    def __init__(self, model: str, text: Optional[str] = None, max_new_tokens: int = 30,
                 num_beams: int = 1, local_files_only: bool = False, half: bool = True,
                 batch_size: int = 8, model_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(batch_size)
        if not isinstance(model, str) or not model:
            raise ValueError(f'HFCaptioner needs model= a hub id or a folder, got {model!r}.')
        self.model_name = model
        self.text = text
        self.max_new_tokens = int(max_new_tokens)
        self.num_beams = int(num_beams)
        self.local_files_only = local_files_only
        self.half = half
        self.model_kwargs = dict(model_kwargs or {})
        self.processor = None

    def load(self, device: torch.device) -> None:
        """Load processor and model (once), then put the model on ``device``."""
        if self.model is None:
            from transformers import AutoProcessor
            kwargs = dict(self.model_kwargs, local_files_only=self.local_files_only)
            try:
                self.processor = AutoProcessor.from_pretrained(self.model_name, **kwargs)
                model = _auto_model_class().from_pretrained(self.model_name, **kwargs)
            except OSError as err:
                raise OSError(f'HFCaptioner could not load {self.model_name!r} (a hub id or a '
                              f'folder written by save_pretrained): {err}') from err
            self.model = model.eval().requires_grad_(False)
        self.dtype = torch.float16 if self.half and device.type == 'cuda' else torch.float32
        self.model.to(device=device, dtype=self.dtype)

    def extract(self, images: torch.Tensor) -> List[str]:
        """Captions of one chunk."""
        kwargs: Dict[str, Any] = dict(images=list(images.cpu()), return_tensors='pt',
                                      do_rescale=False)
        if self.text:
            kwargs['text'] = [self.text] * images.shape[0]
        inputs = self.processor(**kwargs)
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                  num_beams=self.num_beams)
        return [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
