# ICM-SR, the paper's model (Tables 1-5, row "ICM-SR" / "ICM-SR-multi"): the teacher's
# manifold is conditioned on colormap + Canny edges through the two T2I-Adapters
# (scale 1.0); the auxiliary fake-score model is trained without the adapter.
# Train: tools/dist_train.sh configs/icmsr_multi.py 4   Test: tools/test.py ... CKPT
_base_ = [
    './_base_/models/icmsr.py',
    './_base_/datasets/hq_div2k_lsdir.py',
    './_base_/datasets/stablesr_testsets.py',
    './_base_/schedules/adamw_cosine_100k.py',
    './_base_/default_runtime.py',
]
