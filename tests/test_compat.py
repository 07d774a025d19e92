"""The import-time shims: basicsr importable, Runner checkpoints loadable safely."""
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
