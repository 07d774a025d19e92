# Runtime shared by every ICM-SR config: scope, hooks, logging, visualisation, environment.
default_scope = 'icmsr'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    # The log line carries the ETA, the lr of both optimizers and every loss term.
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Trainable weights + optimizer/scheduler/loop state every `interval` iterations;
    # the last 3 are kept (the frozen SD weights are never written). Checkpoints and
    # the `last_checkpoint` pointer are replaced atomically, never written in place;
    # leftovers of a killed save are removed at the next start.
    checkpoint=dict(type='AtomicCheckpointHook', interval=5000, by_epoch=False,
                    max_keep_ckpts=3, save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # Exact --resume: the random streams of every rank go into the checkpoint.
    random_state=dict(type='RandomStateHook'),
    # Skipped non-finite steps are logged; `max_consecutive` in a row stop the run.
    nan_guard=dict(type='NonFiniteGuardHook', max_consecutive=10),
    # Grid of LQ | SR | HQ | condition maps of the batch just trained, to every vis backend.
    visualization=dict(type='SRVisualizationHook', interval=1000, max_images=4),
)
# Hooks live in `default_hooks` (a dict) so that a child config changes one field,
# e.g. `default_hooks = dict(checkpoint=dict(interval=1000))`.

log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'

vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends, name='visualizer')

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
randomness = dict(seed=0, deterministic=False)

load_from = None
resume = False
