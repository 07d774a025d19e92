"""Fixtures shared by the engine tests that start processes (tools, torchrun)."""
import socket

import pytest


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """The tiny config's data tree: two training photos and two synthetic test pairs."""
    from demo_data import make_synthetic_paired_set, skimage_training_images
    root = tmp_path_factory.mktemp('tiny_data')
    skimage_training_images(str(root / 'train'), size=96, names=['astronaut', 'coffee'])
    make_synthetic_paired_set(str(root / 'test'), num_images=2, gt_size=128, scale=4)
    return root


@pytest.fixture(scope='module')
def free_port() -> int:
    """A free TCP port on the loopback interface (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
