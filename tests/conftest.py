"""Suite-wide settings.

The tests run tiny models whose convolutions gain nothing from several threads and
lose badly when the cores are shared, so the suite (and the subprocesses it
starts, which inherit the environment) runs single-threaded unless the caller
sets ``OMP_NUM_THREADS`` itself.
"""
import os
import sys

os.environ.setdefault('OMP_NUM_THREADS', '1')
# Shared test helpers (tiny_config.py) import as top-level modules from any test folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
