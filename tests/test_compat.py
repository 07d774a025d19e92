"""The compatibility shims: basicsr importable, Runner checkpoints loadable safely, and the
Recognize Anything code importable and runnable under the pinned transformers."""
import os
import pickle

import numpy as np
import pytest
import torch

import icmsr
from icmsr.compat import trusted_checkpoint_loading


def test_basicsr_degradation_functions_import():
    from basicsr.data.degradations import random_add_gaussian_noise_pt  # noqa: F401
    from basicsr.utils import DiffJPEG  # noqa: F401


def _runner_like_checkpoint(path):
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('compat-test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/loss', np.float64(0.25))
    hub.update_info('iter', 3)
    ckpt = dict(meta=dict(epoch=0, iter=3, seed=np.int64(7), message_hub=hub.state_dict()),
                state_dict={'w': torch.ones(2)})
    torch.save(ckpt, path)


def test_runner_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / 'iter_3.pth'
    _runner_like_checkpoint(path)
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == 3
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))


class _Payload:
    """Stands for an arbitrary pickled object in a foreign checkpoint."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_foreign_pickle_still_refused_unless_trusted(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'obj': _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu')
    with trusted_checkpoint_loading():
        loaded = torch.load(path, map_location='cpu')
    assert isinstance(loaded['obj'], str)
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    assert icmsr.__version__


# --- The Recognize Anything shims (applied when a RAMTagger is built, not on import) ---

@pytest.fixture
def restore_modeling_utils():
    """Remove afterwards the names a test added to transformers.modeling_utils."""
    import transformers.modeling_utils as modeling_utils
    before = set(vars(modeling_utils))
    yield modeling_utils
    for name in set(vars(modeling_utils)) - before:
        delattr(modeling_utils, name)


def test_ram_bert_imports_resolve_from_modeling_utils(restore_modeling_utils):
    import transformers
    import transformers.pytorch_utils as pytorch_utils
    from icmsr.compat import (RAM_MODELING_UTILS_NAMES, find_pruneable_heads_and_indices,
                              provide_ram_transformers_names)
    present = {n for n in RAM_MODELING_UTILS_NAMES if hasattr(restore_modeling_utils, n)}
    added = provide_ram_transformers_names()
    assert set(added) == set(RAM_MODELING_UTILS_NAMES) - present
    # The import line of ram/models/bert.py (upstream and OSEDiff's copy).
    from transformers.modeling_utils import (PreTrainedModel,  # noqa: F401
                                             apply_chunking_to_forward,
                                             find_pruneable_heads_and_indices as found,
                                             prune_linear_layer)
    assert apply_chunking_to_forward is pytorch_utils.apply_chunking_to_forward
    assert prune_linear_layer is pytorch_utils.prune_linear_layer
    assert found is getattr(pytorch_utils, 'find_pruneable_heads_and_indices',
                            find_pruneable_heads_and_indices)
    assert provide_ram_transformers_names() == []  # idempotent
    from packaging.version import Version
    if Version(transformers.__version__) >= Version('5'):  # deleted from transformers: ours
        assert found is find_pruneable_heads_and_indices


def test_find_pruneable_heads_and_indices_keeps_the_other_heads_rows():
    from icmsr.compat import find_pruneable_heads_and_indices
    # 4 heads of width 3; prune heads 1 and 3: rows of heads 0 and 2 stay.
    heads, index = find_pruneable_heads_and_indices([1, 3], 4, 3, set())
    assert heads == {1, 3} and index.tolist() == [0, 1, 2, 6, 7, 8]
    # Head 0 already pruned (3 heads left: originally 1, 2, 3); prune 0 (no-op) and 2.
    heads, index = find_pruneable_heads_and_indices([0, 2], 3, 3, {0})
    assert heads == {2} and index.tolist() == [0, 1, 2, 6, 7, 8]
    assert index.dtype == torch.long


def _ram_like_bert_module():
    """A module shaped like ram/models/bert.py: PreTrainedModel subclasses of transformers 4."""
    import types

    from torch import nn
    from transformers import BertConfig, PreTrainedModel

    class BertPreTrainedModel(PreTrainedModel):
        config_class = BertConfig
        base_model_prefix = 'bert'

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                module.weight.data.fill_(self.config.initializer_range)
                module.bias.data.zero_()

    class TinyBert(BertPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(4, 4)
            self.init_weights()  # as ram's BertModel does, without post_init()

    module = types.ModuleType('ram_like_bert')
    module.BertPreTrainedModel, module.TinyBert = BertPreTrainedModel, TinyBert
    return module, BertConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=8, initializer_range=0.5)


def test_adapted_ram_bert_classes_build_and_mask_like_transformers_4():
    from transformers import PreTrainedModel
    from icmsr.compat import adapt_ram_bert_module
    module, config = _ram_like_bert_module()
    v5 = hasattr(PreTrainedModel, 'get_expanded_tied_weights_keys')
    if v5:  # the failure of the real ram under transformers 5
        with pytest.raises(AttributeError, match='all_tied_weights_keys'):
            module.TinyBert(config)
    added = adapt_ram_bert_module(module)
    model = module.TinyBert(config)
    assert torch.all(model.proj.weight == 0.5) and torch.all(model.proj.bias == 0)
    assert ('init_weights' in added) == v5
    # transformers' own class is left alone.
    assert not ({'get_head_mask', 'invert_attention_mask'} & set(vars(PreTrainedModel)))
    mask = torch.tensor([[1, 1, 0]])
    inverted = model.invert_attention_mask(mask)
    assert inverted.shape == (1, 1, 1, 3) and inverted.dtype == torch.float32
    assert inverted[0, 0, 0].tolist() == [0.0, 0.0, torch.finfo(torch.float32).min]
    assert model.invert_attention_mask(torch.ones(2, 4, 3)).shape == (2, 1, 4, 3)
    assert model.get_head_mask(None, 3) == [None, None, None]
    per_head = model.get_head_mask(torch.tensor([1.0, 0.0]), 3)
    assert per_head.shape == (3, 1, 2, 1, 1) and per_head[2, 0, :, 0, 0].tolist() == [1.0, 0.0]
    assert adapt_ram_bert_module(module) == []  # idempotent


def test_ram_tokenizer_class_answers_to_the_transformers_4_name(tmp_path):
    from bert_tokenizer import save_bert_tokenizer
    from icmsr.compat import ram_bert_tokenizer_class
    folder = save_bert_tokenizer(str(tmp_path / 'bert'), vocab_size=120)
    tokenizer = ram_bert_tokenizer_class().from_pretrained(folder)
    # What RAM's init_tokenizer does with it.
    tokenizer.add_special_tokens({'bos_token': '[DEC]'})
    tokenizer.add_special_tokens({'additional_special_tokens': ['[ENC]']})
    assert tokenizer.additional_special_tokens_ids == [tokenizer.convert_tokens_to_ids('[ENC]')]
    assert len(tokenizer) == 122 and tokenizer.bos_token_id == 120
