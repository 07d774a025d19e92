"""Common machinery of the SR datasets: pipeline building, prompts, bad-image policy."""
import os.path as osp
import warnings
from typing import Callable, List, Optional, Sequence, Set, Union

import numpy as np
from mmengine.dataset import BaseDataset, Compose

from icmsr.registry import TRANSFORMS
from icmsr.fileio.captions import load_captions, lookup_caption
from icmsr.fileio.file_lists import resolve
from icmsr.fileio.image_io import ImageLoadError

BAD_IMAGE_POLICIES = ('skip', 'raise')


class BadImageWarning(UserWarning):
    """A training image could not be loaded and was replaced by another one."""


class BaseSRDataset(BaseDataset):
    """Base class of :class:`HQImageDataset` and :class:`PairedImageDataset`.

    Subclasses implement :meth:`list_items`, returning dicts with ``key``,
    ``gt_path``, ``lq_path`` and ``relpath`` (the name captions are looked up by).
    This class adds the prompt, builds the pipeline from our own ``TRANSFORMS``
    registry (so configs work without setting MMEngine's default scope) and
    applies the bad-image policy in :meth:`prepare_data`.

    Args:
        data_root: Folder that relative paths in the config are resolved against.
        prompt: Fixed prompt of every image, and the fallback for images that the
            caption file does not cover.
        caption_file: Optional JSON ``{name: caption}`` or text ``name<TAB>caption``
            file (relative to ``data_root`` unless absolute).
        on_bad_image: ``'skip'`` replaces an item whose file cannot be decoded by a
            random other item and warns with :class:`BadImageWarning` naming the
            file; ``'raise'`` raises :class:`ImageLoadError`. ``test_mode`` always
            raises: a test set must not silently lose images.
        pipeline: Transforms (config dicts or callables).
        serialize_data, lazy_init, max_refetch, indices, test_mode: As in
            :class:`mmengine.dataset.BaseDataset`.
    """

    def __init__(self,
                 data_root: str = '',
                 prompt: str = '',
                 caption_file: Optional[str] = None,
                 on_bad_image: str = 'skip',
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 test_mode: bool = False) -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(
                f'on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}')
        if not isinstance(prompt, str):
            raise TypeError(f'prompt must be a string, got {type(prompt).__name__}')
        self.prompt = prompt
        self.caption_file = caption_file
        self.on_bad_image = on_bad_image
        self._bad_indices: Set[int] = set()
        built = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        super().__init__(
            data_root=data_root or '', pipeline=[], serialize_data=serialize_data,
            lazy_init=lazy_init, max_refetch=max_refetch, indices=indices,
            test_mode=test_mode)
        self.pipeline = Compose(built)

    def list_items(self) -> List[dict]:
        """List the dataset's images.

        Returns:
            One dict per item with ``key``, ``gt_path``, ``lq_path``, ``relpath``.
        """
        raise NotImplementedError

    def load_data_list(self) -> List[dict]:
        """Build the data list: the subclass's items plus their prompts.

        Returns:
            Dicts with ``key``, ``gt_path``, ``lq_path`` and ``prompt``.
        """
        items = self.list_items()
        captions = None
        if self.caption_file:
            captions = load_captions(resolve(self.data_root, self.caption_file))
        uncovered = []
        for item in items:
            relpath = item.pop('relpath')
            caption = lookup_caption(captions, relpath) if captions is not None else None
            if captions is not None and caption is None:
                uncovered.append(relpath)
            item['prompt'] = self.prompt if caption is None else caption
        if uncovered:
            warnings.warn(
                f'{type(self).__name__}: {len(uncovered)} of {len(items)} images have no '
                f'caption in {self.caption_file!r} (e.g. {uncovered[0]!r}); they use the '
                f'fixed prompt {self.prompt!r}.', stacklevel=2)
        return items

    def prepare_data(self, idx: int) -> Optional[dict]:
        """Run the pipeline on one item, applying the bad-image policy.

        Args:
            idx: Index of the item.

        Returns:
            The pipeline's output, or None when the item was skipped (MMEngine's
            ``__getitem__`` then fetches another index via :meth:`_rand_another`).

        Raises:
            ImageLoadError: In test mode or with ``on_bad_image='raise'``.
        """
        try:
            return super().prepare_data(idx)
        except ImageLoadError as err:
            if self.test_mode or self.on_bad_image == 'raise':
                raise
            self._bad_indices.add(idx)
            if len(self._bad_indices) >= len(self):
                raise RuntimeError(
                    f'{type(self).__name__}: none of the {len(self)} images could be '
                    f'loaded; the last one failed with: {err}') from err
            warnings.warn(
                f'Skipping unreadable training image {err.path!r} ({err.reason}); a '
                'random other image is used instead. Remove or fix the file.',
                BadImageWarning, stacklevel=2)
            return None

    def _rand_another(self) -> int:
        """Draw a random index that has not failed before (numpy's global RNG)."""
        while True:
            idx = int(np.random.randint(0, len(self)))
            if idx not in self._bad_indices:
                return idx

    @staticmethod
    def _key_of(relpath: str) -> str:
        """Return the key of an image: its relative path without extension."""
        return osp.splitext(relpath)[0]
