"""Per-iteration time of the MMEngine Runner vs a bare ``train_step`` loop (tiny model, CPU).

Usage: ``python tools/benchmarks/runner_overhead.py [--iters 30] [--warmup 3] [--rounds 2]``

Both loops use the same model, optimizer wrappers and dataloader built from
``configs/icmsr_tiny.py``; the Runner adds its hooks (timer, logger, parameter
scheduler, checkpoint, random-state, non-finite guard, visualisation) and the
message hub. Validation is off. Rounds alternate bare/Runner so that a change in
machine load hits both alike; the median of the per-round per-iteration times is
printed, with the ratio (target <= 1.15). Times are process CPU seconds by default
(robust on a shared machine with one torch thread; ``--wall`` for wall clock). Checkpoint and visualisation events are
timed separately (they happen every 100 iterations in the tiny config).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

# Process CPU time: on a shared machine the wall clock mostly measures the other
# processes; with one torch thread, CPU time is what an idle core would take.
# `--wall` switches to the wall clock.
_clock = time.process_time


def parse_args() -> argparse.Namespace:
    """Parse the command line.

    Returns:
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=30, help='timed iterations per round')
    parser.add_argument('--warmup', type=int, default=3, help='untimed iterations per round')
    parser.add_argument('--rounds', type=int, default=2, help='bare/Runner round pairs')
    parser.add_argument('--threads', type=int, default=1, help='torch threads')
    parser.add_argument('--wall', action='store_true', help='time with the wall clock')
    return parser.parse_args()


def load_cfg(data_root: str, work_dir: str, total_iters: int):
    """The tiny config, pointed at demo data, without validation."""
    os.environ['ICMSR_TINY_DATA'] = data_root
    from mmengine.config import Config
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = Config.fromfile(os.path.join(root, 'configs', 'icmsr_tiny.py'))
    cfg.work_dir = work_dir
    cfg.train_cfg.max_iters = total_iters
    cfg.train_cfg.val_interval = 10 ** 9
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.param_scheduler[0].end = cfg.param_scheduler[0].T_max = total_iters
    cfg.log_level = 'WARNING'
    return cfg


def bare_loop(cfg, warmup: int, iters: int) -> float:
    """Seconds per iteration of ``model.train_step`` fed by the same dataloader."""
    import copy
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import Runner
    from icmsr.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    loader = iter(Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader), seed=0))
    model.train()
    for _ in range(warmup):
        model.train_step(next(loader), optim)
    start = _clock()
    for _ in range(iters):
        model.train_step(next(loader), optim)
    return (_clock() - start) / iters


def runner_loop(cfg, warmup: int, iters: int) -> float:
    """Seconds per iteration inside ``Runner.train`` (hooks included)."""
    import copy
    import uuid
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Clock(Hook):
        priority = 'LOWEST'
        marks = {}

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == warmup:
                self.marks['start'] = _clock()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter + 1 == warmup + iters:
                self.marks['end'] = _clock()

    cfg = copy.deepcopy(cfg)
    cfg.experiment_name = f'overhead_{uuid.uuid4().hex[:6]}'
    runner = Runner.from_cfg(cfg)
    runner.register_hook(Clock(), priority='LOWEST')
    runner.train()
    return (Clock.marks['end'] - Clock.marks['start']) / iters


def event_costs(cfg) -> dict:
    """Seconds of one checkpoint save and one visualisation grid."""
    import copy
    import uuid
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.experiment_name = f'events_{uuid.uuid4().hex[:6]}'
    cfg.train_cfg.max_iters = 1
    runner = Runner.from_cfg(cfg)
    runner.train()
    start = _clock()
    runner.save_checkpoint(runner.work_dir, 'bench.pth')
    ckpt = _clock() - start
    hook = [h for h in runner.hooks if type(h).__name__ == 'SRVisualizationHook'][0]
    start = _clock()
    hook._log_grid(runner)  # the batch the training step handed over
    return dict(checkpoint=ckpt, vis_grid=_clock() - start,
                ckpt_mb=os.path.getsize(os.path.join(runner.work_dir, 'bench.pth')) / 2**20)


def main() -> None:
    """Run the rounds and print the figures."""
    args = parse_args()
    global _clock
    if args.wall:
        _clock = time.perf_counter
    torch.set_num_threads(args.threads)
    import icmsr  # noqa: F401
    # The demo-data maker is scaffolding next to the tools, not part of icmsr.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from demo_data import make_synthetic_paired_set, skimage_training_images
    from icmsr.utils.setup_env import register_all_modules
    register_all_modules()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, 'data')
        skimage_training_images(os.path.join(data, 'train'), size=128)
        make_synthetic_paired_set(os.path.join(data, 'test'), num_images=2, gt_size=128)
        # One iteration past the timed window: the checkpoint saved at the end of
        # training is an event (timed below), not per-iteration overhead.
        cfg = load_cfg(data, os.path.join(tmp, 'work'), args.warmup + args.iters + 1)
        bare, run = [], []
        for r in range(args.rounds):
            bare.append(bare_loop(cfg, args.warmup, args.iters))
            run.append(runner_loop(cfg, args.warmup, args.iters))
            print(f'round {r}: bare {bare[-1]:.3f} s/it, Runner {run[-1]:.3f} s/it', flush=True)
        events = event_costs(cfg)
    b, r = statistics.median(bare), statistics.median(run)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'bare train_step loop : {b:.3f} s/iter (median of {args.rounds} x {args.iters})')
    print(f'Runner.train         : {r:.3f} s/iter')
    print(f'ratio                : {r / b:.3f}  (target <= 1.15)')
    print(f'checkpoint save      : {events["checkpoint"]:.3f} s ({events["ckpt_mb"]:.2f} MB), '
          f'visualisation grid: {events["vis_grid"]:.3f} s (each every 100 iterations)')
    print(f'clock {"wall" if args.wall else "process CPU"}, torch threads {args.threads}, '
          f'load average {load:.2f} on {os.cpu_count()} cores')


if __name__ == '__main__':
    main()
