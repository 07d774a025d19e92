# ICM conditioning with the TSD regulariser: the teacher of ICM-SR (colormap + Canny through
# the T2I-Adapters, scale 1.0) inside TSD-SR's objective (VSD + TSM over DASM, as
# configs/tsdsr.py). Not a row of the paper: a combination the toolkit makes possible.
_base_ = ['./icmsr_multi.py', './_base_/models/tsd_regularizer.py']

model = dict(regularizer={{_base_.tsd_regularizer}})
