"""See what the model trains on: ``python tools/analysis/browse_dataset.py CONFIG [--num 8]``.

Draws N training samples through the config's real data pipeline
(``train_dataloader.dataset``) and the model's training preprocessing (the
on-device Real-ESRGAN degradation and the condition extractor), and saves one
labelled grid per batch: HQ | degraded LQ (resized to the HQ size, as the
generator sees it) | condition maps (colormap | Canny for the multi condition).
Only the data side is built (no diffusion model), so it runs on any machine.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402

from icmsr.engine.config_checks import check_data_roots  # noqa: E402
from icmsr.engine.runner_utils import add_config_args, load_config  # noqa: E402
from icmsr.engine.visualization_hook import CONDITION_LABELS, sr_grid  # noqa: E402
from icmsr.user_errors import run_tool  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The parsed arguments.
    """
    p = argparse.ArgumentParser(description='Save HQ | degraded LQ | condition grids of '
                                'training samples')
    add_config_args(p, 'training config', 'train_dataloader.batch_size=4')
    p.add_argument('--num', type=int, default=8, help='samples to show (default %(default)s)')
    p.add_argument('--per-grid', type=int, default=4, help='samples per grid image')
    p.add_argument('--out', default=None,
                   help='output folder (default <work_dir>/browse_dataset)')
    p.add_argument('--seed', type=int, default=0, help='seed of crops and degradations')
    p.add_argument('--device', default='cpu', help='device of the degradation (default cpu)')
    args = p.parse_args(argv)
    if args.num < 1 or args.per_grid < 1:
        p.error('--num and --per-grid must be positive')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Build the dataset and the preprocessor, then write the grids.

    Args:
        argv: Arguments.

    Returns:
        Exit code.
    """
    args = parse_args(argv)
    from mmengine.runner import set_random_seed
    from icmsr.registry import DATASETS, MODELS
    from icmsr.utils.setup_env import register_all_modules
    from icmsr.utils.atomic_io import atomic_save_image
    register_all_modules()
    cfg = load_config(args.config, args.cfg_options)
    check_data_roots(cfg, ['train_dataloader'])
    set_random_seed(args.seed)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    # The model's training preprocessing (its degradation and the extractor of its condition
    # block) without building the diffusion components.
    from icmsr.models import ConditionExtractor
    from icmsr.models.icmsr import ICMSR, prepare_training_batch
    preprocessor = MODELS.build(dict(cfg.model.get('data_preprocessor') or
                                     dict(type='SRDataPreprocessor'))).to(args.device)
    degradation = MODELS.build(cfg.model.degradation) if cfg.model.get('degradation') else None
    condition = cfg.model.get('condition')
    extractor = None if condition is None else ConditionExtractor(
        mode=condition['kind'], **dict(condition.get('extractor') or {}))
    out = args.out or osp.join(cfg.get('work_dir') or 'work_dirs', 'browse_dataset')
    os.makedirs(out, exist_ok=True)
    order = torch.randperm(len(dataset))[:args.num].tolist()
    written = []
    for start in range(0, len(order), args.per_grid):
        batch = pseudo_collate([dataset[i] for i in order[start:start + args.per_grid]])
        with torch.no_grad():
            inputs = prepare_training_batch(batch, preprocessor, degradation, extractor)
        conds = list(ICMSR.condition_panels(inputs['cond']))
        names = list(CONDITION_LABELS.get(None if condition is None else condition['kind'], []))
        names += [f'condition {i}' for i in range(len(names) + 1, len(conds) + 1)]
        labels = ['HQ', 'degraded LQ'] + names[:len(conds)]
        grid = sr_grid([inputs['gt'], inputs['lq']] + conds, args.per_grid, labels)
        path = osp.join(out, f'samples_{start:04d}.png')
        atomic_save_image(path, grid)
        written.append(path)
    print(f'{len(order)} sample(s) of {len(dataset)} in {len(written)} grid(s) '
          f'({" | ".join(labels)}) written to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
