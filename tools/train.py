"""Train an ICM-SR model from a config: ``python tools/train.py CONFIG [options]``.

Flags follow MMagic/MMEngine's ``tools/train.py``; see ``docs/training.md``.
"""
import argparse
import os.path as osp
import sys

from icmsr.utils.network import go_offline_if_unreachable

# Before the hub libraries read HF_HUB_OFFLINE: offline, fail at once instead of retrying.
go_offline_if_unreachable()

from mmengine.runner import Runner  # noqa: E402

import icmsr  # noqa: E402,F401  (applies the checkpoint-loading shims)
from icmsr.engine.dist import init_process_group_for  # noqa: E402
from icmsr.engine.runner_utils import (add_runner_args, enable_amp,  # noqa: E402
                                       export_local_rank, guard_checkpoint_loading,
                                       load_config, set_resume, set_work_dir)
from icmsr.registry import RUNNERS  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Parse the command line.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Train an ICM-SR model')
    parser.add_argument('config', help='training config file')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='PATH',
                        help='resume from PATH; without PATH, from the latest checkpoint '
                        'in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision with dynamic loss scaling')
    add_runner_args(parser, 'train_cfg.max_iters=1000')
    return parser.parse_args()


def prepare_tiny_data(cfg) -> None:
    """Write the tiny config's demo data on first use (``tiny_root`` marks that config).

    Args:
        cfg: The merged config.
    """
    root = cfg.get('tiny_root')
    if not root or osp.isdir(osp.join(root, 'train')):
        return
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from demo_data import prepare_demo_data
    print(f'Writing the tiny demo data to {root} (as `python tools/demo.py --prepare-only`)')
    prepare_demo_data(root)


def main() -> None:
    """Build the Runner from the config and the flags, then train."""
    args = parse_args()
    export_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    init_process_group_for(args.launcher, cfg)  # gloo without CUDA; the Runner reuses it
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    try:
        if args.amp:
            enable_amp(cfg)
        set_resume(cfg, args.resume)
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f'error: {err}') from None
    prepare_tiny_data(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    guard_checkpoint_loading(runner, trust=args.trust_checkpoint)
    runner.train()


if __name__ == '__main__':
    main()
