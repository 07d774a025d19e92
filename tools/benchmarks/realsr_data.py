"""Where the RealSR benchmark data used by tests and benchmarks lives (scaffolding, not in ``icmsr``).

Tools in ``tools/benchmarks`` import it as a sibling module; the tests through the
``tools/benchmarks`` entry that ``tests/conftest.py`` adds to ``sys.path``.
"""
import os
import os.path as osp

#: Environment variable that points at the RealSR folder (test_LR, test_HR, ...).
REALSR_ENV = 'ICMSR_REALSR_ROOT'


def realsr_root() -> str:
    """Return the RealSR benchmark folder (it may not exist).

    ``$ICMSR_REALSR_ROOT`` when set, else ``../shared/data/realsr`` next to the
    repository root (the layout of our development and CI machines).

    Returns:
        An absolute path; callers check that the files they need exist.
    """
    env = os.environ.get(REALSR_ENV)
    if env:
        return osp.abspath(env)
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    return osp.abspath(osp.join(repo, '..', 'shared', 'data', 'realsr'))
