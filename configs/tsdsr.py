# TSD-SR† (Table 1): Target Score Distillation reproduced on the OSEDiff† baseline - same
# SD v1-4 backbone, text-only teacher, data, losses and schedule - with the regulariser
# swapped for TSD (configs/_base_/models/tsd_regularizer.py). Derivation and open choices:
# docs/model.md, "TSD-SR on SD v1-4".
_base_ = ['./osediff.py', './_base_/models/tsd_regularizer.py']

model = dict(regularizer={{_base_.tsd_regularizer}})
