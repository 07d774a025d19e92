"""Registries of the ``icmsr`` scope, children of MMEngine's root registries.

Every component a config can name (``type='OneStepGenerator'``) lives in one of
these registries. ``locations`` lets MMEngine import the defining modules lazily
the first time a registry is searched, so building from a config works without
importing the whole package by hand. Outside the ``Runner`` (notebooks, scripts)
call :func:`icmsr.utils.setup_env.register_all_modules` once. This module imports
nothing of the toolkit, so every component can import it.
"""
from typing import Any, Optional

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, locations=['icmsr.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, locations=['icmsr.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=['icmsr.engine'])
LOG_PROCESSORS = Registry(
    'log processor', parent=MMENGINE_LOG_PROCESSORS, locations=['icmsr.engine'])

DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=['icmsr.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS, locations=['icmsr.datasets'])
TRANSFORMS = Registry(
    'transform', parent=MMENGINE_TRANSFORMS, locations=['icmsr.datasets'])

# Models, degradations and condition extractors are all ``nn.Module``-like
# components built from config dicts, so they share the MODELS registry.
MODELS = Registry(
    'model', parent=MMENGINE_MODELS,
    locations=['icmsr.models', 'icmsr.degradations'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, locations=['icmsr.engine'])

OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, locations=['icmsr.engine'])
OPTIM_WRAPPERS = Registry(
    'optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, locations=['icmsr.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
    locations=['icmsr.engine'])
PARAM_SCHEDULERS = Registry(
    'parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS, locations=['icmsr.engine'])

METRICS = Registry('metric', parent=MMENGINE_METRICS, locations=['icmsr.evaluation'])
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR, locations=['icmsr.evaluation'])

VISUALIZERS = Registry(
    'visualizer', parent=MMENGINE_VISUALIZERS, locations=['icmsr.engine'])
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS, locations=['icmsr.engine'])


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

