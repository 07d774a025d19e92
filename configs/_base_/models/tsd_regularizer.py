# TSD-SR's regulariser on SD v1-4 (docs/model.md, "TSD-SR on SD v1-4"): (1 - 0.3) VSD + 0.3 TSM
# (TSD-SR's lambda = 0.7) summed over a DASM trajectory (4 steps, 50 timesteps apart, weights
# 1, 0.3, 0.3, 0.3, random span offset), start t ~ U[50, 950) as TSD-SR.
# Switch parts off with tsm_weight=0.0 (VSD over DASM) or dasm=None (single timestep).
tsd_regularizer = dict(
    type='TSDRegularizer',
    t_range=(50, 950),
    tsm_weight=0.3,
    dasm=dict(steps=4, stride=50, step_weights=(1.0, 0.3, 0.3, 0.3), jitter=True))
