# OSEDiff's schedule: AdamW, constant lr 5e-5, 100K iterations (the alternative to
# the cosine decay of ICM-SR's paper). Everything else as adamw_cosine_100k.py.
_base_ = ['./adamw_cosine_100k.py']

param_scheduler = [
    dict(type='ConstantLR', by_epoch=False, begin=0, end={{_base_.max_iters}}, factor=1.0),
]
