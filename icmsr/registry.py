"""Registries of the ``icmsr`` scope, children of MMEngine's root registries.

Every component a config can name (``type='OneStepGenerator'``) lives in one of
these registries. ``locations`` lets MMEngine import the defining modules lazily
the first time a registry is searched, so building from a config works without
importing the whole package by hand. Outside the ``Runner`` (notebooks, scripts)
call :func:`icmsr.utils.setup_env.register_all_modules` once. This module imports
nothing of the toolkit, so every component can import it.
"""
from typing import Any, List, Optional

from mmengine import registry as mmengine_registry
from mmengine.registry import Registry

# Packages MMEngine imports, the first time a registry is searched, to find its components.
_ENGINE, _DATA, _MODELS = ['icmsr.engine'], ['icmsr.datasets'], ['icmsr.models', 'icmsr.degradations']


def _child(name: str, root: str, locations: List[str]) -> Registry:
    """A registry of the ``icmsr`` scope under MMEngine's root registry ``root``."""
    return Registry(name, parent=getattr(mmengine_registry, root), locations=list(locations))


RUNNERS = _child('runner', 'RUNNERS', _ENGINE)
LOOPS = _child('loop', 'LOOPS', _ENGINE)
HOOKS = _child('hook', 'HOOKS', _ENGINE)
LOG_PROCESSORS = _child('log processor', 'LOG_PROCESSORS', _ENGINE)
MODEL_WRAPPERS = _child('model_wrapper', 'MODEL_WRAPPERS', _ENGINE)
OPTIMIZERS = _child('optimizer', 'OPTIMIZERS', _ENGINE)
OPTIM_WRAPPERS = _child('optim_wrapper', 'OPTIM_WRAPPERS', _ENGINE)
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor', 'OPTIM_WRAPPER_CONSTRUCTORS', _ENGINE)
PARAM_SCHEDULERS = _child('parameter scheduler', 'PARAM_SCHEDULERS', _ENGINE)
VISUALIZERS = _child('visualizer', 'VISUALIZERS', _ENGINE)
VISBACKENDS = _child('vis_backend', 'VISBACKENDS', _ENGINE)

DATASETS = _child('dataset', 'DATASETS', _DATA)
DATA_SAMPLERS = _child('data sampler', 'DATA_SAMPLERS', _DATA)
TRANSFORMS = _child('transform', 'TRANSFORMS', _DATA)

# Models, degradations and condition extractors are all ``nn.Module``-like
# components built from config dicts, so they share the MODELS registry.
MODELS = _child('model', 'MODELS', _MODELS)

METRICS = _child('metric', 'METRICS', ['icmsr.evaluation'])
EVALUATOR = _child('evaluator', 'EVALUATOR', ['icmsr.evaluation'])


def build_or_use(cfg: Any, registry: Optional[Registry] = None, **default_args: Any) -> Any:
    """Build ``cfg`` when it is a config dict; return it unchanged otherwise.

    Components accept either a config or an already built object (a module shared
    with another component, a tokenizer...), so every constructor resolves its
    arguments through this one function.

    Args:
        cfg: a config dict (``type=...``), an object, or None.
        registry: where to look ``type`` up (default: :data:`MODELS`).
        **default_args: defaults merged into the config when building.

    Returns:
        The built object, ``cfg`` itself, or None.
    """
    if isinstance(cfg, dict):
        return (registry or MODELS).build(cfg, default_args=default_args or None)
    return cfg

