# ICM conditioning with the TSD regulariser: the teacher of ICM-SR (colormap + Canny through
# the T2I-Adapters, scale 1.0) inside TSD-SR's objective (VSD + TSM over DASM, as
# configs/tsdsr.py). Not a row of the paper: a combination the toolkit makes possible.
_base_ = ['./icmsr_multi.py']

model = dict(
    regularizer=dict(
        type='TSDRegularizer',
        t_range=(50, 950),
        tsm_weight=0.3,
        dasm=dict(steps=4, stride=50, step_weights=(1.0, 0.3, 0.3, 0.3), jitter=True)))
