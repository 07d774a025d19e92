"""Evaluate a checkpoint on the config's test sets: ``python tools/test.py CONFIG CHECKPOINT``.

Flags follow MMagic/MMEngine's ``tools/test.py``; see ``docs/training.md``.
"""
import argparse
import sys
from typing import List, Optional

from icmsr.utils.network import go_offline_if_unreachable

# Before the hub libraries read HF_HUB_OFFLINE: offline, fail at once instead of retrying.
go_offline_if_unreachable()

from mmengine.dist import is_main_process  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import icmsr  # noqa: E402,F401  (applies the checkpoint-loading shims)
from icmsr.engine.config_checks import check_data_roots, check_pretrained_folders  # noqa: E402
from icmsr.engine.dist import init_process_group_for  # noqa: E402
from icmsr.engine.runner_utils import (add_config_args, add_runner_args, export_local_rank,  # noqa: E402
                                       guard_checkpoint_loading, load_config, set_work_dir)
from icmsr.registry import RUNNERS  # noqa: E402
from icmsr.user_errors import (check_input_exists, check_output_file,  # noqa: E402
                               check_output_folder, run_tool)
from icmsr.utils.atomic_io import atomic_write_json  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Test an ICM-SR checkpoint')
    add_config_args(parser, 'config file (its test_dataloader/test_evaluator are used)',
                    'test_dataloader.0.batch_size=2')
    parser.add_argument('checkpoint', help='checkpoint file (a .pth written by tools/train.py)')
    parser.add_argument('--work-dir', help='directory for the test log '
                        '(default: the config\'s work_dir, else ./work_dirs/<config name>)')
    parser.add_argument('--out', help='write the metrics to this JSON file')
    add_runner_args(parser)
    args = parser.parse_args(argv)
    if args.out is not None and not args.out.endswith('.json'):
        parser.error(f'--out must name a .json file, got {args.out!r}')
    return args


def main(argv: Optional[List[str]] = None) -> None:
    """Check the inputs, build the Runner, load the checkpoint, test and report the metrics.

    Every check that can fail on a user's mistake runs before the Runner is built.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    export_local_rank(args.local_rank)
    if '://' not in args.checkpoint:
        check_input_exists(args.checkpoint, 'checkpoint')
    cfg = load_config(args.config, args.cfg_options)
    set_work_dir(cfg, args.work_dir, args.config)
    check_output_folder(cfg.work_dir, '--work-dir' if args.work_dir else 'work_dir')
    if args.out:
        check_output_file(args.out, '--out')
    check_data_roots(cfg, ['test_dataloader'])
    check_pretrained_folders(cfg)
    init_process_group_for(args.launcher, cfg)  # gloo without CUDA; the Runner reuses it
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    cfg.resume = False
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    guard_checkpoint_loading(runner, trust=args.trust_checkpoint)
    metrics = runner.test()
    if args.out and is_main_process():
        atomic_write_json(args.out, {k: float(v) if isinstance(v, (int, float)) else v
                                     for k, v in metrics.items()}, indent=2)
        print(f'metrics written to {args.out}')


if __name__ == '__main__':
    sys.exit(run_tool(main))
