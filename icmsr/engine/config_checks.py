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
"""
import difflib
from typing import Any, Dict, List, Optional

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
