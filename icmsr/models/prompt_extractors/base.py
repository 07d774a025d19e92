"""What every prompt extractor does: a batch of images in, one prompt per image out."""
import os
from typing import List, Optional

import torch


def weights_from_env(path: Optional[str], env: str, what: str, download: str) -> str:
    """Resolve a weights file from an argument or an environment variable, or fail clearly.

    Args:
        path: the configured path (None or '' : read ``$env``).
        env: the environment variable that holds the path.
        what: what the weights are, for the message (e.g. ``"RAM's weights"``).
        download: where the file can be downloaded.

    Returns:
        The path of an existing file.

    Raises:
        FileNotFoundError: naming the variable, the expected file and where to get it.
    """
    path = path or os.environ.get(env, '')
    if not path:
        raise FileNotFoundError(
            f'{what} are not configured: set {env}=/path/to/file (download it from '
            f'{download}) or pass the path in the extractor config.')
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{what}: {path!r} (from {env} or the config) is not a file. Download it from '
            f'{download} and point {env} at it.')
    return path


class PromptExtractor:
    """Base class: turn images into text prompts with a frozen model, loaded lazily.

    Subclasses implement :meth:`load` (import the heavy package, build the model on
    a device) and :meth:`extract` (prompts of a preprocessed batch). Calling the
    extractor checks the input, loads the model on the images' device the first
    time (and moves it when the device changes), and runs it in chunks of
    ``batch_size`` without gradients.

    The extractor is deliberately not an ``nn.Module``: its weights stay out of the
    trained model's state dict, optimizers, DDP wrappers and ``.to()`` calls.

    Args:
        batch_size: most images per forward pass.
    """

    def __init__(self, batch_size: int = 8) -> None:
        if int(batch_size) < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
        self.batch_size = int(batch_size)
        self.model = None
        self.device: Optional[torch.device] = None

    def load(self, device: torch.device) -> None:
        """Build (or move) the model on ``device``; sets ``self.model``."""
        raise NotImplementedError

    def extract(self, images: torch.Tensor) -> List[str]:
        """Prompts of a ``(b, 3, H, W)`` batch in ``[0, 1]`` on the model's device."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> List[str]:
        """One prompt per image.

        Args:
            images: float ``(B, 3, H, W)`` in ``[0, 1]``, any device.

        Returns:
            ``B`` strings.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f'{type(self).__name__} expects images of shape (B, 3, H, W) '
                             f'in [0, 1], got {shape}.')
        if not images.is_floating_point():
            raise TypeError(f'{type(self).__name__} expects float images in [0, 1], got '
                            f'{images.dtype}; divide uint8 by 255.')
        if self.model is None or self.device != images.device:
            self.load(images.device)
            self.device = images.device
        prompts: List[str] = []
        for start in range(0, images.shape[0], self.batch_size):
            chunk = images[start:start + self.batch_size].detach().float().clamp(0, 1)
            prompts += self.extract(chunk)
        return prompts
