"""Import a script under tools/ as a module, the way its tests call its functions."""
import importlib.util
import os.path as osp
from types import ModuleType

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(relpath: str) -> ModuleType:
    """Load ``ROOT/relpath`` (e.g. ``'tools/analysis/lemma1.py'``) as a fresh module.

    Args:
        relpath: the script's path relative to the repository root.

    Returns:
        The executed module.
    """
    name = osp.splitext(osp.basename(relpath))[0] + '_tool'
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
