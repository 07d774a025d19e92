"""Fixtures of the model tests (helpers live in model_testlib.py)."""
import pytest
import torch

from model_testlib import build_tiny


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest single-threaded on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='module')
def tiny_model():
    """One tiny multi-adapter ICMSR shared by a test module (do not train it)."""
    model = build_tiny('multi')
    model.eval()
    return model
