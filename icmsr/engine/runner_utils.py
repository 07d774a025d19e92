"""Helpers shared by ``tools/train.py`` and ``tools/test.py``: command-line flags to config keys.

The tools stay thin: everything that turns a flag into a config change lives
here, where it can be tested without starting a Runner.
"""
import argparse
import os
import os.path as osp
import pickle
import warnings
from typing import Dict, Optional

from mmengine.config import Config

from icmsr.compat import (checkpoint_refusal_message, trusted_checkpoint_loading,
                          untrusted_checkpoint_loading)
from icmsr.engine.checkpoint_io import checkpoint_problem, resolve_resume
from icmsr.engine.config_checks import (check_config_values, check_option_keys_accepted,
                                        config_key_warnings, follow_max_iters)
from icmsr.user_errors import (ConfigError, MissingInputError, UnusableInputError,
                               add_debug_flag)

class ConfigKeyWarning(UserWarning):
    """A config key or ``--cfg-options`` path that nothing is likely to read."""


def add_config_args(parser: argparse.ArgumentParser, config_help: str, cfg_example: str) -> None:
    """Add what every tool that reads a config takes: the config file, ``--cfg-options``, ``--debug``.

    Args:
        parser: the tool's parser.
        config_help: help text of the positional ``config``.
        cfg_example: an example ``--cfg-options`` entry for the help text.
    """
    from mmengine.config import DictAction
    parser.add_argument('config', help=config_help)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help=f'override config keys, e.g. {cfg_example}')
    add_debug_flag(parser)


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """Add the flags every Runner tool shares (as MMEngine's tools name them).

    ``--trust-checkpoint``, ``--launcher`` and torchrun's ``--local-rank``; the config
    flags come from :func:`add_config_args`.

    Args:
        parser: the tool's parser.
    """
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow full unpickling of the loaded checkpoint '
                        '(only for files you trust: unpickling can run code)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher (pytorch = torchrun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None,
                        help=argparse.SUPPRESS)


def load_config(path: str, cfg_options: Optional[Dict] = None) -> Config:
    """Read a config, check it, merge ``--cfg-options``, keep the schedule in step.

    The rules are those of :mod:`icmsr.engine.config_checks`: misspelled keys
    and option paths warn with a "did you mean" suggestion
    (:class:`ConfigKeyWarning`); an option a component cannot take and a
    numeric key of the wrong type stop with a :class:`ConfigError`; and
    ``train_cfg.max_iters=N`` moves scheduler ends/``T_max`` (and
    ``val_interval``) that equalled the file's ``max_iters``.

    Args:
        path: Config file.
        cfg_options: The ``--cfg-options`` dict, or None.

    Returns:
        The merged config.

    Raises:
        MissingInputError: ``path`` does not exist.
        ConfigError: An option or value that cannot work (named).
    """
    if not osp.isfile(path):
        raise MissingInputError(f'config file {path!r} does not exist; check the path.')
    cfg = Config.fromfile(path)
    file_max_iters = (cfg.get('train_cfg') or {}).get('max_iters')
    check_option_keys_accepted(cfg, cfg_options)  # its error has the did-you-mean itself
    for message in config_key_warnings(cfg, cfg_options):
        warnings.warn(f'{path}: {message}', ConfigKeyWarning, stacklevel=2)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    check_config_values(cfg)
    for change in follow_max_iters(cfg, file_max_iters, cfg_options):
        print(f'train_cfg.max_iters changed: {change} (schedule ends follow max_iters)')
    return cfg


#: Plain wrapper type -> its mixed-precision twin.
AMP_TWINS = {
    'OptimWrapper': 'AmpOptimWrapper',
    'NonFiniteGuardOptimWrapper': 'AmpNonFiniteGuardOptimWrapper',
}


def _wrapper_entries(optim_wrapper: dict) -> list:
    """Return the optim-wrapper dicts of a config: the sub-wrappers of a dict, else itself."""
    subs = [v for v in optim_wrapper.values() if isinstance(v, dict) and 'optimizer' in v]
    return subs or [optim_wrapper]


def enable_amp(cfg: Config) -> None:
    """Switch every optim wrapper of ``cfg`` to automatic mixed precision (dynamic loss scale).

    Args:
        cfg: A training config with ``optim_wrapper``.

    Raises:
        ConfigError: When a wrapper type has no known AMP twin (a ``ValueError``).
        UnusableInputError: When the machine has no CUDA device (AMP with loss
            scaling needs one; MMEngine would stop with a bare ``AssertionError``);
            a ``RuntimeError``.
    """
    if not amp_device_available():
        raise UnusableInputError(
            '--amp needs a CUDA GPU: mixed precision with dynamic loss scaling runs on CUDA '
            '(or NPU/MLU/MUSA) devices only, and this machine has none '
            '(torch.cuda.is_available() is False). Train without --amp on CPU.')
    if 'optim_wrapper' not in cfg:
        raise ConfigError('--amp: the config has no `optim_wrapper` to switch to AMP.')
    amp_types = set(AMP_TWINS.values())
    for entry in _wrapper_entries(cfg.optim_wrapper):
        kind = entry.get('type', 'OptimWrapper')
        if kind in amp_types:
            continue
        if kind not in AMP_TWINS:
            raise ConfigError(
                f'--amp: optim wrapper type {kind!r} has no AMP version; known: '
                f'{sorted(AMP_TWINS)}. Set the AMP type in the config instead.')
        entry['type'] = AMP_TWINS[kind]
        entry.setdefault('loss_scale', 'dynamic')


def amp_device_available() -> bool:
    """Whether ``AmpOptimWrapper`` can run here (the devices MMEngine accepts for it).

    Returns:
        True with a CUDA, NPU, MLU or MUSA device.
    """
    from mmengine.device import get_device
    return get_device() in ('cuda', 'npu', 'mlu', 'musa')


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """Apply ``--resume [PATH]``: a path resumes from that file, ``'auto'`` from the latest.

    ``'auto'`` reads ``<work_dir>/last_checkpoint`` (written by ``CheckpointHook``)
    and starts from scratch when the work dir has no checkpoint. A truncated or
    unreadable newest checkpoint falls back to the newest intact one, with a
    warning naming both (:func:`icmsr.engine.checkpoint_io.resolve_resume`).
    Call after the work dir is set.

    Args:
        cfg: Training config (``resume`` and ``load_from`` are set).
        resume: ``None`` (no resume), ``'auto'``, or a checkpoint path.

    Raises:
        MissingInputError: An explicit path does not exist, or ``last_checkpoint``
            is empty or dangling (a ``FileNotFoundError``).
        UnusableInputError: The explicit checkpoint, or every checkpoint of the
            work dir, is truncated or unreadable (a ``RuntimeError``).
    """
    if resume is None:
        return
    cfg.resume = True
    if resume == 'auto':
        work_dir = cfg.get('work_dir')
        try:
            cfg.load_from = resolve_resume(work_dir) if work_dir else None
        except FileNotFoundError as err:  # checkpoint_io's messages name the work dir
            raise MissingInputError(_flagged('--resume', err)) from err
        except RuntimeError as err:
            raise UnusableInputError(_flagged('--resume', err)) from err
        return
    if '://' not in resume:
        if not osp.isfile(resume):
            raise MissingInputError(f'--resume: checkpoint {resume!r} does not exist.')
        problem = checkpoint_problem(resume)
        if problem is not None:
            raise UnusableInputError(f'--resume: checkpoint {resume} is unreadable: {problem}.')
    cfg.load_from = resume


def _flagged(flag: str, err: Exception) -> str:
    """``err``'s message, starting with ``flag`` (once)."""
    message = str(err)
    return message if message.startswith(flag) else f'{flag}: {message}'


def set_work_dir(cfg: Config, work_dir: Optional[str], config_path: str) -> None:
    """Choose the work dir: the flag, else the config's, else ``./work_dirs/<config name>``.

    Args:
        cfg: The config to update.
        work_dir: Value of ``--work-dir``.
        config_path: Path of the config file.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def export_local_rank(local_rank: Optional[int]) -> None:
    """Expose ``--local-rank`` of the old ``torch.distributed.launch`` as ``LOCAL_RANK``."""
    if local_rank is not None and 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


def guard_checkpoint_loading(runner, trust: bool) -> None:
    """Make the Runner's checkpoint loading follow the project's pickle-safety policy.

    Checkpoints written by our Runner load with ``weights_only=True`` (see
    ``icmsr/compat.py``), even when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set in
    the environment. A file that pickles anything else is refused with a
    message naming ``--trust-checkpoint``; with ``trust=True`` loading uses full
    pickle, for the duration of the load only.

    Args:
        runner: The Runner whose ``load_checkpoint`` to guard.
        trust: The user opted in with ``--trust-checkpoint``.
    """
    load = runner.load_checkpoint

    def load_checkpoint(filename: str, *args, **kwargs):
        if trust:
            with trusted_checkpoint_loading():
                return load(filename, *args, **kwargs)
        try:
            with untrusted_checkpoint_loading():
                return load(filename, *args, **kwargs)
        except pickle.UnpicklingError as err:
            raise RuntimeError(checkpoint_refusal_message(filename, err)) from err

    runner.load_checkpoint = load_checkpoint
