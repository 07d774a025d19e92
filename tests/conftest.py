"""Suite-wide settings.

The tests run tiny models whose convolutions gain nothing from several threads and
lose badly when the cores are shared, so the suite (and the subprocesses it
starts, which inherit the environment) runs single-threaded unless the caller
sets ``OMP_NUM_THREADS`` itself.

Test scaffolding that also serves the tools lives next to the tools, outside the
``icmsr`` package: ``tools/demo_data.py`` (demo/test data) and
``tools/benchmarks/realsr_data.py`` (RealSR lookup). Their folders go on
``sys.path`` here, so tests write ``from demo_data import ...``.
"""
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _folder in (os.path.join(_REPO, 'tools'), os.path.join(_REPO, 'tools', 'benchmarks')):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)

os.environ.setdefault('OMP_NUM_THREADS', '1')
# Shared test helpers (tiny_config.py) import as top-level modules from any test folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
