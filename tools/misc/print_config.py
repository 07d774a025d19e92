"""Print a config as the Runner will see it: ``python tools/misc/print_config.py CONFIG [--cfg-options ...]``.

The config goes through the same loading as ``tools/train.py`` (base files
merged, ``--cfg-options`` applied, the "did you mean" checks, schedule ends
following ``train_cfg.max_iters``), then is printed in Python syntax, or
saved with ``--save-path`` (``.py``, ``.json`` or ``.yaml``).
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from icmsr.engine.runner_utils import add_config_args, load_config  # noqa: E402
from icmsr.user_errors import run_tool  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The parsed arguments.
    """
    p = argparse.ArgumentParser(description='Print the full config (bases and options merged)')
    add_config_args(p, 'config file', 'train_cfg.max_iters=1000')
    p.add_argument('--save-path', help='also write the merged config here (.py/.json/.yaml)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Print (and optionally save) the merged config.

    Args:
        argv: Arguments.

    Returns:
        Exit code.
    """
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    print(cfg.pretty_text)
    if args.save_path:
        from icmsr.utils.atomic_io import atomic_write_text
        if not args.save_path.endswith(('.py', '.json', '.yaml', '.yml')):
            print(f'error: --save-path must end in .py, .json or .yaml, got {args.save_path!r}',
                  file=sys.stderr)
            return 2
        # Config.dump picks the format from the extension; write it to a string first.
        fmt = osp.splitext(args.save_path)[1].lstrip('.')
        text = cfg.pretty_text if fmt == 'py' else None
        if text is None:
            import mmengine
            text = mmengine.dump(cfg.to_dict(), file_format='yaml' if fmt == 'yml' else fmt)
        atomic_write_text(args.save_path, text)
        print(f'config saved to {args.save_path}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
