"""Compatibility shims of the pinned stack, deliberately narrow.

Two are applied once, on ``import icmsr``:

1. **basicsr 1.4.2 under torchvision >= 0.17.** basicsr imports
   ``torchvision.transforms.functional_tensor``, a module removed from
   torchvision. basicsr only uses ``rgb_to_grayscale`` from it, which
   ``torchvision.transforms.functional`` provides, so we alias the module name.

2. **Resuming MMEngine checkpoints under torch >= 2.6.** ``torch.load`` now
   defaults to ``weights_only=True``; MMEngine 0.10.7 calls it without the
   argument, and its checkpoints carry the message hub (``HistoryBuffer`` objects
   holding numpy arrays), so ``--resume`` fails with "Weights only load failed".

   Checkpoint policy: we do **not** turn pickle safety off. Instead we add to
   torch's allow-list exactly the types a checkpoint written by our own Runner
   contains (MMEngine's ``HistoryBuffer`` and the numpy array/scalar/dtype
   reconstructors), and make ``HistoryBuffer`` stop pickling its four built-in
   statistics functions (which would need ``builtins.getattr`` on the list; they
   are re-registered on load anyway). A checkpoint that holds anything else - for instance a file
   someone else produced that pickles arbitrary objects - still fails with
   torch's error. Users who trust such a file opt in explicitly with
   :func:`trusted_checkpoint_loading` (``--trust-checkpoint`` of the tools),
   which sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the duration only.
   Everywhere else the toolkit loads inside :func:`untrusted_checkpoint_loading`,
   which *ignores* a ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` set in the user's
   environment: only our own flag relaxes pickle safety.
   :func:`checkpoint_refusal_message` turns torch's refusal into one line that
   names ``--trust-checkpoint`` (torch's own hint suggests ``weights_only=False``
   and carries terminal colour codes).

Two more are applied only when a Recognize Anything tagger is built
(:class:`~icmsr.models.prompt_extractors.RAMTagger`), never on ``import icmsr``:

3. **The Recognize Anything code under transformers >= 4.56.** Its
   ``ram/models/bert.py`` (upstream and the copies in SeeSR/OSEDiff) imports
   ``apply_chunking_to_forward``, ``find_pruneable_heads_and_indices`` and
   ``prune_linear_layer`` from ``transformers.modeling_utils``. transformers
   4.56.0 stopped re-exporting them there (they stay in
   ``transformers.pytorch_utils``), and 5.0.0 deleted
   ``find_pruneable_heads_and_indices`` altogether.
   :func:`provide_ram_transformers_names` adds the missing names back to
   ``transformers.modeling_utils`` - transformers' own functions where they
   exist, ours for ``find_pruneable_heads_and_indices`` (head pruning, which
   tagging never calls) - and touches nothing that is present. Its BERT classes
   also subclass ``PreTrainedModel`` as transformers 4 had it (``init_weights()``
   in ``__init__`` without ``post_init()``; ``get_head_mask`` and
   ``invert_attention_mask`` in forward, both removed in 5.0.0):
   :func:`adapt_ram_bert_module` gives ``ram``'s own ``BertPreTrainedModel`` what
   it lacks, leaving transformers' classes alone.

4. **The BERT tokenizer of OSEDiff's copy of ``ram``.** Its
   ``ram/models/utils.py:init_tokenizer()`` takes no argument and loads
   ``BertTokenizer`` from an absolute path of the authors' machine, so neither of
   its models can be built anywhere else. :func:`ram_tokenizer_from` redirects
   that one lookup (``ram.models.utils.BertTokenizer``) to the tokenizer the user
   names, for the duration of the model's construction only; ``init_tokenizer``
   itself (the ``[DEC]``/``[ENC]`` special tokens) runs unchanged. Under
   transformers >= 5.0.0 the tokenizer it gets also answers to
   ``additional_special_tokens_ids`` (renamed ``extra_special_tokens_ids``), which
   ``init_tokenizer`` reads. Upstream's ``ram.models.ram`` goes through the same
   lookup (its ``text_encoder_type`` default), so both copies use one tokenizer.
"""
import contextlib
import re
import sys
from typing import Any, Iterator, List, Optional, Set, Tuple

from icmsr.utils.environ import temporary_environ

_APPLIED = False


def _alias_torchvision_functional_tensor() -> None:
    """Register ``torchvision.transforms.functional_tensor`` as an alias module."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms.functional as functional
        sys.modules[name] = functional


def runner_checkpoint_safe_globals() -> List[object]:
    """List the non-tensor types an MMEngine Runner writes into checkpoints.

    Returns:
        Classes and functions to pass to ``torch.serialization.add_safe_globals``.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    safe: List[object] = [HistoryBuffer, np.ndarray, np.dtype]
    # numpy moved its internals from numpy.core to numpy._core in 2.0.
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    safe += [_reconstruct, scalar]
    # Concrete dtype classes (Float64DType, Int64DType, ...) of numpy >= 1.25.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        safe += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]
    return safe


def _slim_history_buffer_pickles() -> None:
    """Keep MMEngine's default statistics functions out of ``HistoryBuffer`` pickles.

    The original ``__getstate__`` stores ``min/max/mean/current`` by reference,
    which a ``weights_only`` load can only read with ``getattr`` allow-listed.
    ``__setstate__`` re-registers them, so only custom methods need saving.
    """
    from mmengine.logging import HistoryBuffer
    builtin = {'min', 'max', 'mean', 'current'}

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
        custom = {k: v for k, v in self._statistics_methods.items() if k not in builtin}
        if custom:
            state['statistics_methods'] = custom
        return state

    HistoryBuffer.__getstate__ = __getstate__


def _allow_runner_checkpoints() -> None:
    """Allow-list the types of our own Runner checkpoints for ``weights_only`` loads."""
    import torch
    _slim_history_buffer_pickles()
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 loads with full pickle anyway
        add(runner_checkpoint_safe_globals())


_FORCE_NO = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
_FORCE_YES = 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'
_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')


@contextlib.contextmanager
def trusted_checkpoint_loading() -> Iterator[None]:
    """Load checkpoints with full pickle inside this block (explicit opt-in).

    Only use it for files you trust: unpickling can execute arbitrary code.

    Yields:
        Nothing; the previous environment is restored on exit.
    """
    with temporary_environ({_FORCE_NO: '1', _FORCE_YES: None}):
        yield


@contextlib.contextmanager
def untrusted_checkpoint_loading() -> Iterator[None]:
    """Load checkpoints with ``weights_only=True`` inside this block, whatever the environment.

    A ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` exported in the shell would make
    torch unpickle everything that MMEngine loads; inside this block torch is
    forced to the safe loader instead, so only ``--trust-checkpoint``
    (:func:`trusted_checkpoint_loading`) relaxes it.

    Yields:
        Nothing; the previous environment is restored on exit.
    """
    with temporary_environ({_FORCE_NO: None, _FORCE_YES: '1'}):
        yield


def checkpoint_refusal_message(path: str, err: BaseException,
                               flag: Optional[str] = '--trust-checkpoint') -> str:
    """Explain a refused unpickling in the toolkit's words (no colour codes).

    Args:
        path: The checkpoint file.
        err: torch's ``UnpicklingError`` (or an error caused by one).
        flag: The command-line flag that opts in; None for the Python API.

    Returns:
        One message naming the file, the flag and torch's first reason line.
    """
    text = _ANSI.sub('', str(err))
    # torch's text is a paragraph about weights_only=False plus one line saying which
    # global was refused; keep only that line.
    reason = next((line.strip() for line in text.splitlines()
                   if any(k in line for k in ('GLOBAL', 'Unsupported', 'WeightsUnpickler'))), None)
    reason = reason or (text.splitlines()[0].strip() if text.strip() else type(err).__name__)
    how = (f'If you trust this file, pass {flag}.' if flag else
           'If you trust this file, load it inside icmsr.compat.trusted_checkpoint_loading().')
    return (f'Refusing to unpickle {path}: it contains objects outside the allow-list of '
            f'checkpoints written by icmsr, and unpickling them can run arbitrary code. {how} '
            f'(torch: {reason})')


def find_pruneable_heads_and_indices(heads: List[int], n_heads: int, head_size: int,
                                     already_pruned_heads: Set[int]) -> Tuple[Set[int], Any]:
    """Which attention heads to prune, and which weight rows stay (transformers < 5 API).

    Args:
        heads: Heads to prune, numbered as in the unpruned layer.
        n_heads: Heads the layer has now.
        head_size: Width of one head.
        already_pruned_heads: Heads pruned before, numbered as in the unpruned layer.

    Returns:
        The heads still to prune (``heads`` minus ``already_pruned_heads``) and a
        ``LongTensor`` of the rows of the ``n_heads * head_size`` projection to keep.
    """
    import torch
    todo = set(heads) - set(already_pruned_heads)
    keep = torch.ones(n_heads, head_size, dtype=torch.bool)
    for head in todo:
        # Heads pruned before this one shifted it down in the current layer.
        keep[head - sum(1 for h in already_pruned_heads if h < head)] = False
    return todo, torch.arange(n_heads * head_size)[keep.flatten()]


#: Names the Recognize Anything ``bert.py`` imports from ``transformers.modeling_utils``.
RAM_MODELING_UTILS_NAMES = ('apply_chunking_to_forward', 'find_pruneable_heads_and_indices',
                            'prune_linear_layer')


def provide_ram_transformers_names() -> List[str]:
    """Make ``transformers.modeling_utils`` export what the ``ram`` package imports from it.

    Needed from transformers 4.56.0 (names moved to ``transformers.pytorch_utils``);
    from 5.0.0 ``find_pruneable_heads_and_indices`` is ours. Names that exist are left alone.

    Returns:
        The names that were added (empty with transformers < 4.56).
    """
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils
    added = []
    for name in RAM_MODELING_UTILS_NAMES:
        if hasattr(modeling_utils, name):
            continue
        value = getattr(pytorch_utils, name, None)
        if value is None and name == 'find_pruneable_heads_and_indices':
            value = find_pruneable_heads_and_indices
        if value is None:
            raise ImportError(f'transformers {_transformers_version()} has no {name}; the '
                              'Recognize Anything code cannot be imported with it.')
        setattr(modeling_utils, name, value)
        added.append(name)
    return added


def _transformers_version() -> str:
    import transformers
    return transformers.__version__


def _invert_attention_mask(self: Any, mask: Any) -> Any:
    """Additive mask from a 0/1 mask: 0 where attended, dtype minimum where masked.

    Args:
        mask: ``(B, S)`` or ``(B, T, S)`` with ones at the positions to attend to.

    Returns:
        ``(B, 1, 1, S)`` or ``(B, 1, T, S)`` in the model's dtype.
    """
    import torch
    extended = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None, :, :]
    extended = extended.to(dtype=self.dtype)
    return (1.0 - extended) * torch.finfo(self.dtype).min


def _get_head_mask(self: Any, head_mask: Any, num_hidden_layers: int,
                   is_attention_chunked: bool = False) -> Any:
    """Per-layer head masks: ``[None] * layers``, or the mask broadcast to 5-D.

    Args:
        head_mask: None, ``(heads,)`` or ``(layers, heads)`` with 1 to keep a head.
        num_hidden_layers: layers of the encoder.
        is_attention_chunked: add a trailing axis for chunked attention.

    Returns:
        A list of None, or ``(layers, 1, heads, 1, 1)`` in the model's dtype.
    """
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None].expand(num_hidden_layers, -1)
    head_mask = head_mask[:, None, :, None, None].to(dtype=self.dtype)
    return head_mask[..., None] if is_attention_chunked else head_mask


def _init_weights_after_post_init(self: Any) -> None:
    """``init_weights`` for classes that call it in ``__init__`` instead of ``post_init``.

    transformers 5 ties and initialises weights from state that ``post_init``
    records (``all_tied_weights_keys``); ``post_init`` records it, then calls
    ``init_weights`` again, which then runs transformers' own.
    """
    from transformers import PreTrainedModel
    if 'all_tied_weights_keys' in self.__dict__:
        PreTrainedModel.init_weights(self)
    else:
        self.post_init()


def adapt_ram_bert_module(module: Any) -> List[str]:
    """Give a ``ram`` BERT module's ``BertPreTrainedModel`` what transformers 5 took away.

    ``ram/models/bert.py`` (and OSEDiff's ``bert_lora.py``) subclass
    ``PreTrainedModel`` as transformers 4 defined it: their models call
    ``init_weights()`` in ``__init__`` (transformers 5 needs ``post_init()`` first)
    and their forward calls ``get_head_mask`` and ``invert_attention_mask``, which
    ``PreTrainedModel`` no longer has from transformers 5.0.0. Only that class of
    that module changes; transformers' classes are untouched.

    Args:
        module: the imported ``ram.models.bert`` or ``ram.models.bert_lora``.

    Returns:
        The names given to the class (empty with transformers < 5).
    """
    from transformers import PreTrainedModel
    cls = module.BertPreTrainedModel
    added = []
    for name, func in (('get_head_mask', _get_head_mask),
                       ('invert_attention_mask', _invert_attention_mask)):
        if not hasattr(cls, name):
            setattr(cls, name, func)
            added.append(name)
    needs_post_init = hasattr(PreTrainedModel, 'get_expanded_tied_weights_keys')
    if needs_post_init and 'init_weights' not in cls.__dict__:
        cls.init_weights = _init_weights_after_post_init
        added.append('init_weights')
    return added


def ram_bert_tokenizer_class() -> Any:
    """``BertTokenizer``, with the ``additional_special_tokens_ids`` that ``init_tokenizer`` reads.

    transformers 5.0.0 renamed that attribute ``extra_special_tokens_ids``; with it
    the class returned is a subclass that answers to the old name too.

    Returns:
        A tokenizer class (``BertTokenizer`` itself with transformers < 5).
    """
    from transformers import BertTokenizer
    if hasattr(BertTokenizer, 'additional_special_tokens_ids'):
        return BertTokenizer

    class RAMBertTokenizer(BertTokenizer):
        """``BertTokenizer`` that also answers to the transformers 4 name of the extra ids."""

        @property
        def additional_special_tokens_ids(self) -> List[int]:
            """The ids of the extra special tokens (``[ENC]`` for RAM)."""
            return self.extra_special_tokens_ids

    return RAMBertTokenizer


class _NamedTokenizer:
    """Stands in for ``BertTokenizer`` inside ``ram.models.utils``: loads the named one."""

    def __init__(self, name: str) -> None:
        self.name = name

    def from_pretrained(self, _requested: str, *args: Any, **kwargs: Any) -> Any:
        """Load ``self.name`` whatever path ``init_tokenizer`` asks for."""
        return ram_bert_tokenizer_class().from_pretrained(self.name)


@contextlib.contextmanager
def ram_tokenizer_from(name: str) -> Iterator[None]:
    """Inside the block, the ``ram`` package's ``init_tokenizer`` loads tokenizer ``name``.

    Args:
        name: a hub id (``'bert-base-uncased'``) or a folder with a BERT tokenizer.

    Yields:
        Nothing; ``ram.models.utils.BertTokenizer`` is restored on exit.
    """
    import ram.models.utils as ram_utils
    original = ram_utils.BertTokenizer
    ram_utils.BertTokenizer = _NamedTokenizer(name)
    try:
        yield
    finally:
        ram_utils.BertTokenizer = original


def apply() -> None:
    """Apply the import-time shims (1, 2) once; later calls do nothing."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_torchvision_functional_tensor()
    _allow_runner_checkpoints()
    _APPLIED = True
