"""Catch config mistakes before a run starts: misspelled keys and a schedule left behind.

* :func:`config_key_warnings`: a top-level key that the Runner does not read but
  that is one typo away from one it does (``trian_cfg``), and every
  ``--cfg-options`` path that the config did not have before (``trian_cfg.max_iters``,
  ``train_cfg.max_iter``), get a warning with a "did you mean" suggestion.
  Other unknown top-level keys are config variables (``max_iters``,
  ``tiny_unet``, ...) and stay silent.
* :func:`follow_max_iters`: the documented rule that moves the LR schedule
  with ``train_cfg.max_iters``. A scheduler's ``end`` or ``T_max`` that equals
  the config file's ``max_iters`` means "until the end of training", so when
  ``--cfg-options train_cfg.max_iters=N`` changes it, those values become N
  too; so does ``train_cfg.val_interval`` when it equalled ``max_iters``
  ("validate once, at the end"). Values the options set explicitly are kept.

Mistakes that would only surface deep inside a build stop the tool before anything
is built, with a :class:`~icmsr.user_errors.ConfigError` naming the key:

* :func:`check_config_values`: the numbers the toolkit reads (iterations,
  intervals, batch sizes, learning rates, tile sizes, loss weights ...) have
  the right type and range (``train_cfg.max_iters='abc' must be an integer``).
* :func:`check_option_keys_accepted`: a ``--cfg-options`` path that adds a key
  to a component (a dict with ``type``) whose constructor takes no such argument
  (``model.regularizer.cfg_scael=2``).
* :func:`check_data_roots`: the dataset folders of the dataloaders a run builds exist.
* :func:`check_pretrained_folders`: every local ``from_pretrained`` folder of the
  model exists (hub ids are left to the build).
"""
import difflib
import inspect
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from icmsr.user_errors import ConfigError, MissingInputError

#: Top-level keys read by ``Runner.from_cfg`` and by this toolkit's tools and configs.
RUNNER_KEYS = (
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader',
    'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper', 'param_scheduler',
    'val_evaluator', 'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor',
    'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level', 'visualizer',
    'default_scope', 'randomness', 'experiment_name', 'runner_type', 'vis_backends')


def _suggest(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.75)
    return f'; did you mean {close[0]!r}?' if close else ''


def _lookup(tree: Any, part: str):
    """Child ``part`` of a dict or list node, or a sentinel KeyError when absent."""
    if isinstance(tree, dict):
        if part in tree:
            return tree[part]
        raise KeyError(part)
    if isinstance(tree, (list, tuple)) and part.isdigit() and int(part) < len(tree):
        return tree[int(part)]
    raise KeyError(part)


def config_key_warnings(cfg: Dict, cfg_options: Optional[Dict] = None) -> List[str]:
    """List likely config mistakes, each with a "did you mean" suggestion where one exists.

    Args:
        cfg: The config as read from the file (``Config.to_dict()`` or the
            Config), *before* ``--cfg-options`` are merged.
        cfg_options: The ``--cfg-options`` dict (dotted keys).

    Returns:
        Warning messages (empty when nothing looks wrong).
    """
    if not isinstance(cfg, dict):  # an mmengine Config
        cfg = cfg.to_dict()
    messages = []
    for key in cfg:
        if key.startswith('_') or key in RUNNER_KEYS:
            continue
        hint = _suggest(key, RUNNER_KEYS)
        if hint:
            messages.append(f'config key {key!r} is not read by the Runner{hint}')
    for path in (cfg_options or {}):
        node = cfg
        parts = path.split('.')
        for depth, part in enumerate(parts):
            try:
                node = _lookup(node, part)
            except KeyError:
                siblings = list(node) if isinstance(node, dict) else []
                if depth == 0:
                    siblings = list(dict.fromkeys(list(RUNNER_KEYS) + siblings))
                where = '.'.join(parts[:depth]) or 'the top level'
                messages.append(
                    f'--cfg-options {path}: {part!r} does not exist in {where} of the config, '
                    f'so nothing may read it{_suggest(part, siblings)}')
                break
    return messages


def _schedulers(param_scheduler: Any) -> List[Dict]:
    if isinstance(param_scheduler, dict):
        return [param_scheduler]
    return [s for s in (param_scheduler or []) if isinstance(s, dict)]


def follow_max_iters(cfg: Dict, file_max_iters: Optional[int],
                     cfg_options: Optional[Dict] = None) -> List[str]:
    """Move schedule ends that meant "the end of training" to the new ``max_iters``.

    Args:
        cfg: The config after ``--cfg-options`` were merged (changed in place).
        file_max_iters: ``train_cfg.max_iters`` of the config file.
        cfg_options: The options, whose explicit ``param_scheduler``/
            ``val_interval`` settings are left alone.

    Returns:
        One line per changed value (for the log).
    """
    train_cfg = cfg.get('train_cfg') or {}
    new = train_cfg.get('max_iters')
    if file_max_iters is None or new is None or new == file_max_iters:
        return []
    explicit = set(cfg_options or {})
    changes = []
    if not any(k.startswith('param_scheduler') for k in explicit):
        for i, sched in enumerate(_schedulers(cfg.get('param_scheduler'))):
            if sched.get('by_epoch', True):  # MMEngine's default: counts epochs, not iterations
                continue
            for field in ('end', 'T_max'):
                if sched.get(field) == file_max_iters:
                    sched[field] = new
                    changes.append(f'param_scheduler[{i}].{field}: {file_max_iters} -> {new}')
    if (train_cfg.get('val_interval') == file_max_iters
            and 'train_cfg.val_interval' not in explicit):
        train_cfg['val_interval'] = new
        changes.append(f'train_cfg.val_interval: {file_max_iters} -> {new}')
    return changes


#: Config key name -> (kind, minimum) for the numbers the toolkit and MMEngine read, wherever
#: the key sits. ``kind`` is ``'int'``, ``'number'``, ``'size'`` (an int or a sequence of
#: ints) or ``'tile'`` (an int or ``'auto'``); None values mean "default/off".
NUMERIC_KEYS = {
    'max_iters': ('int', 1), 'max_epochs': ('int', 1), 'val_interval': ('int', 1),
    'val_begin': ('int', 1), 'batch_size': ('int', 1), 'base_batch_size': ('int', 1),
    'num_workers': ('int', 0), 'interval': ('int', None), 'max_keep_ckpts': ('int', None),
    'tile_size': ('tile', 1), 'vae_tile_size': ('tile', 1), 'tile_overlap': ('int', 0),
    'vae_overlap': ('int', 0), 'lora_rank': ('int', 1), 'crop_size': ('size', 1),
    'lr': ('number', 0), 'weight_decay': ('number', 0), 'eta_min': ('number', 0),
    'cfg_scale': ('number', None), 'tsm_weight': ('number', 0), 'T_max': ('int', 1),
}
#: Keys checked only inside a scheduler of ``param_scheduler`` (``begin``/``end`` are common words).
SCHEDULER_KEYS = {'begin': ('int', 0), 'end': ('int', 0)}
#: Dicts every value of which is a non-negative number.
WEIGHT_DICTS = ('loss_weights', )


def _walk(tree: Any, path: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...], Any]]:
    """Yield ``(path, value)`` for every dict entry and list item below ``tree``."""
    items = (tree.items() if isinstance(tree, dict)
             else enumerate(tree) if isinstance(tree, (list, tuple)) else ())
    for key, value in items:
        sub = path + (str(key), )
        yield sub, value
        yield from _walk(value, sub)


def _value_problem(value: Any, kind: str, minimum: Optional[float]) -> Optional[str]:
    """What is wrong with ``value`` as a ``kind`` of at least ``minimum``, or None."""
    if value is None:
        return None
    if kind == 'size':
        parts = list(value) if isinstance(value, (list, tuple)) else [value]
        problems = [_value_problem(part, 'int', minimum) for part in parts]
        if not parts or any(problems):
            return f'must be an integer or a list of integers of at least {minimum}'
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == 'tile' and not is_int:
        return None if value == 'auto' else "must be an integer or 'auto'"
    if kind == 'int' and not is_int:
        return 'must be an integer'
    if kind == 'number' and not (is_int or isinstance(value, float)):
        return 'must be a number'
    if minimum is not None and value < minimum:
        return f'must be at least {minimum}'
    return None


def check_config_values(cfg: Dict) -> None:
    """Check the types and ranges of the numeric keys the toolkit reads, before any build.

    The rules are :data:`NUMERIC_KEYS` (by key name, anywhere in the config),
    :data:`SCHEDULER_KEYS` (inside ``param_scheduler``) and :data:`WEIGHT_DICTS`.
    A value that is ``None`` passes (it means "default" or "off").

    Args:
        cfg: The merged config (a Config or a dict).

    Raises:
        ConfigError: naming every wrong key with its value and what it must be.
    """
    if not isinstance(cfg, dict):  # an mmengine Config
        cfg = cfg.to_dict()
    problems = []
    for path, value in _walk(cfg):
        rule = NUMERIC_KEYS.get(path[-1])
        if path[0] == 'param_scheduler' and path[-1] in SCHEDULER_KEYS:
            rule = SCHEDULER_KEYS[path[-1]]
        if len(path) > 1 and path[-2] in WEIGHT_DICTS:
            rule = ('number', 0)
        problem = rule and _value_problem(value, *rule)
        if problem:
            problems.append(f'{".".join(path)}={value!r} {problem}')
    if problems:
        raise ConfigError('; '.join(problems) + ' (fix the config file or the --cfg-options value)')


def _component_class(type_name: str):
    """The class a component ``type`` names in the toolkit's registries, or None."""
    from mmengine.registry import Registry

    from icmsr import registry
    for candidate in vars(registry).values():
        if isinstance(candidate, Registry):
            try:
                found = candidate.get(type_name)
            except Exception:  # noqa: BLE001  a registry that cannot import its modules
                found = None
            if inspect.isclass(found):
                return found
    return None


def check_option_keys_accepted(cfg: Dict, cfg_options: Optional[Dict] = None) -> None:
    """Refuse a ``--cfg-options`` key that a component's constructor cannot take.

    Only paths the config did not have are checked, and only where the parent is
    a component (a dict with ``type``) of a registry of this toolkit whose
    ``__init__`` takes no ``**kwargs``; elsewhere the did-you-mean warning of
    :func:`config_key_warnings` stays a warning.

    Args:
        cfg: The config as read from the file, before the options are merged.
        cfg_options: The ``--cfg-options`` dict (dotted keys).

    Raises:
        ConfigError: naming the option, the component and the closest accepted name.
    """
    if not isinstance(cfg, dict):  # an mmengine Config
        cfg = cfg.to_dict()
    for path, value in (cfg_options or {}).items():
        *parents, key = path.split('.')
        try:
            node = cfg
            for part in parents:
                node = _lookup(node, part)
        except KeyError:
            continue  # a new branch: warned about by config_key_warnings
        if not isinstance(node, dict) or key in node or not isinstance(node.get('type'), str):
            continue
        cls = _component_class(node['type'])
        if cls is None:
            continue
        try:
            params = inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):  # no Python signature to read
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) \
                or key in params:
            continue
        accepted = [name for name in params if name != 'self']
        raise ConfigError(
            f'--cfg-options {path}={value!r}: {node["type"]} ({".".join(parents)}) takes no '
            f'argument {key!r}{_suggest(key, accepted)} It takes: {", ".join(accepted)}.')


#: Dataset keys that name a folder below ``data_root`` (or an absolute one).
FOLDER_KEYS = ('folders', 'lq_dir', 'gt_dir')


def _leaf_datasets(dataset: Any, key: str) -> Iterator[Tuple[str, Dict]]:
    """``(key, dataset dict)`` of the datasets inside wrappers (Repeat/Concat datasets)."""
    if not isinstance(dataset, dict):
        return
    if isinstance(dataset.get('dataset'), dict):
        yield from _leaf_datasets(dataset['dataset'], f'{key}.dataset')
    elif isinstance(dataset.get('datasets'), (list, tuple)):
        for i, sub in enumerate(dataset['datasets']):
            yield from _leaf_datasets(sub, f'{key}.datasets.{i}')
    else:
        yield key, dataset


def _folder_problems(key: str, dataset: Dict) -> Iterator[str]:
    """Messages for the missing folders of one dataset config."""
    root = dataset.get('data_root') or ''
    if not isinstance(root, str) or '://' in root:
        return
    if root and not osp.isdir(root):
        yield f'{key}.data_root: folder {root!r} does not exist'
        return
    for field in FOLDER_KEYS:
        entries = dataset.get(field)
        entries = [entries] if isinstance(entries, str) else entries or []
        for i, entry in enumerate(entries):
            if not isinstance(entry, str):
                continue
            path = entry if osp.isabs(entry) else osp.join(root, entry)
            if not osp.isdir(path):
                name = f'{key}.{field}' + (f'.{i}' if field == 'folders' else '')
                yield f'{name}: folder {path!r} does not exist'


def check_data_roots(cfg: Dict, dataloader_keys: Sequence[str]) -> None:
    """Check that the image folders of the named dataloaders exist, before the Runner is built.

    Args:
        cfg: The merged config.
        dataloader_keys: e.g. ``('train_dataloader', 'val_dataloader')``; a key may
            hold one dataloader or a list of them.

    Raises:
        MissingInputError: naming each missing folder with its config key.
    """
    problems = []
    for loader_key in dataloader_keys:
        loaders = cfg.get(loader_key)
        loaders = [loaders] if isinstance(loaders, dict) else list(loaders or [])
        for i, loader in enumerate(loaders):
            prefix = loader_key if isinstance(cfg.get(loader_key), dict) else f'{loader_key}.{i}'
            for key, dataset in _leaf_datasets(loader.get('dataset'), f'{prefix}.dataset'):
                problems.extend(_folder_problems(key, dataset))
    if problems:
        raise MissingInputError(
            '; '.join(problems) + '. Put the data there, or point the config at it '
            '(its data root variables, or --cfg-options KEY=PATH).')


def check_pretrained_folders(cfg: Dict) -> None:
    """Check the model's local ``from_pretrained`` folders (and subfolders) before it is built.

    Args:
        cfg: The merged config (its ``model``).

    Raises:
        PretrainedWeightsError: naming the first missing folder's key, with how to
            get the weights (a :class:`~icmsr.user_errors.UserError`).
    """
    from icmsr.models.backbones import PretrainedWeightsError, local_weights_problem
    model = cfg.get('model')
    for path, value in _walk(model.to_dict() if hasattr(model, 'to_dict') else model or {},
                             ('model', )):
        if path[-1] != 'from_pretrained' or not isinstance(value, str):
            continue
        parent = model
        for part in path[1:-1]:
            parent = _lookup(parent, part)
        key = '.'.join(path)
        problem = local_weights_problem(key, value, parent.get('subfolder'))
        if problem:
            raise PretrainedWeightsError(problem)
