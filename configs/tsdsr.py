# TSD-SR† (Table 1): Target Score Distillation reproduced on the OSEDiff† baseline - same
# SD v1-4 backbone, text-only teacher, data, losses and schedule - with the regulariser
# swapped for TSD: (1 - 0.3) VSD + 0.3 TSM (TSD-SR's lambda = 0.7) summed over a DASM
# trajectory (4 steps, 50 timesteps apart, weights 1, 0.3, 0.3, 0.3, random span offset),
# start t ~ U[50, 950) as TSD-SR. Derivation and open choices: docs/model.md, "TSD-SR on SD v1-4".
# Switch parts off with tsm_weight=0.0 (VSD over DASM) or dasm=None (single timestep).
_base_ = ['./osediff.py']

model = dict(
    regularizer=dict(
        type='TSDRegularizer',
        t_range=(50, 950),
        tsm_weight=0.3,
        dasm=dict(steps=4, stride=50, step_weights=(1.0, 0.3, 0.3, 0.3), jitter=True)))
