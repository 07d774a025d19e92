# ICM-SR's schedule (paper, Sec. 5.1): AdamW, lr 5e-5, cosine decay, 100K iterations.
# Both optimizers - the generator's LoRA ('generator') and the auxiliary fake-score
# LoRA ('aux_diffusion') - use the same settings, as in OSEDiff's code.
max_iters = 100000

# NonFiniteGuardOptimWrapper = OptimWrapper that skips a step whose loss or gradient
# is NaN/Inf (see NonFiniteGuardHook in default_runtime.py). `--amp` switches it to
# AmpNonFiniteGuardOptimWrapper.
optim_wrapper = dict(
    constructor='ICMSROptimWrapperConstructor',
    generator=dict(
        type='NonFiniteGuardOptimWrapper',
        optimizer=dict(type='AdamW', lr=5e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8),
        clip_grad=dict(max_norm=1.0)),
    aux_diffusion=dict(
        type='NonFiniteGuardOptimWrapper',
        optimizer=dict(type='AdamW', lr=5e-5, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8),
        clip_grad=dict(max_norm=1.0)),
)

# One list, applied to each optimizer of the OptimWrapperDict.
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters,
         eta_min=0.0),
]

# ExactResumeIterBasedTrainLoop = IterBasedTrainLoop whose --resume repeats the
# uninterrupted run (random streams restored after the data replay).
train_cfg = dict(type='ExactResumeIterBasedTrainLoop', max_iters=max_iters, val_interval=5000)

# Batch size: `train_dataloader.batch_size` (in the dataset config) is PER GPU, as
# everywhere in MMEngine. The paper's recipe is 4 per GPU on 4 GPUs (total 16, as in
# OSEDiff's launch script). `auto_scale_lr` records that total; enable it to scale
# the lr linearly when training on a different number of GPUs.
auto_scale_lr = dict(enable=False, base_batch_size=16)
