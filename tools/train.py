"""Train an ICM-SR model from a config: ``python tools/train.py CONFIG [options]``.

Flags follow MMagic/MMEngine's ``tools/train.py``; see ``docs/training.md``.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from icmsr.utils.network import go_offline_if_unreachable

# Before the hub libraries read HF_HUB_OFFLINE: offline, fail at once instead of retrying.
go_offline_if_unreachable()

from mmengine.runner import Runner  # noqa: E402

import icmsr  # noqa: E402,F401  (applies the checkpoint-loading shims)
from icmsr.engine.config_checks import check_data_roots, check_pretrained_folders  # noqa: E402
from icmsr.engine.dist import init_process_group_for  # noqa: E402
from icmsr.engine.runner_utils import (add_config_args, add_runner_args, enable_amp,  # noqa: E402
                                       export_local_rank, guard_checkpoint_loading,
                                       load_config, set_resume, set_work_dir)
from icmsr.registry import RUNNERS  # noqa: E402
from icmsr.user_errors import check_output_folder, run_tool  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Train an ICM-SR model')
    add_config_args(parser, 'training config file', 'train_cfg.max_iters=1000')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None, metavar='PATH',
                        help='resume from PATH; without PATH, from the latest checkpoint '
                        'in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision with dynamic loss scaling')
    add_runner_args(parser)
    return parser.parse_args(argv)


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


def main(argv: Optional[List[str]] = None) -> None:
    """Check the config and the flags, build the Runner, then train.

    Every check that can fail on a user's mistake runs before the Runner is built.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    export_local_rank(args.local_rank)
    cfg = load_config(args.config, args.cfg_options)
    set_work_dir(cfg, args.work_dir, args.config)
    check_output_folder(cfg.work_dir, '--work-dir' if args.work_dir else 'work_dir')
    if args.amp:
        enable_amp(cfg)
    set_resume(cfg, args.resume)
    prepare_tiny_data(cfg)
    check_data_roots(cfg, ['train_dataloader', 'val_dataloader'] if cfg.get('val_cfg')
                     else ['train_dataloader'])
    check_pretrained_folders(cfg)
    init_process_group_for(args.launcher, cfg)  # gloo without CUDA; the Runner reuses it
    cfg.launcher = args.launcher
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    guard_checkpoint_loading(runner, trust=args.trust_checkpoint)
    runner.train()


if __name__ == '__main__':
    sys.exit(run_tool(main))
