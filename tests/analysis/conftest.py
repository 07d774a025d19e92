"""Shared settings of the analysis-tool tests."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny models on a busy 2-core machine run far faster single-threaded (no OpenMP spinning)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
