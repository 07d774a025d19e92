# The paper's three test sets as packaged by StableSR (LQ 128 px, GT 512 px):
# DIV2K-Val (3000 pairs), RealSR (100), DRealSR (93). Each folder holds `test_LR/` and
# `test_HR/` with equal file names; each set reports its metrics under its own prefix
# (`DIV2K-Val/PSNR`, `RealSR/LPIPS`, ...).
#
# Paths: one environment variable per set (default under data/test_sets/), e.g.
#   ICMSR_REALSR=/mnt/StableSR_testsets/RealSR_CenterCrop python tools/test.py ...
# Sets whose folders are named differently (e.g. `lq/`, `gt/`): override
# test_dataloader.<i>.dataset.lq_dir / gt_dir with --cfg-options.
div2k_val_root = '{{$ICMSR_DIV2K_VAL:data/test_sets/DIV2K-Val}}'
realsr_root = '{{$ICMSR_REALSR:data/test_sets/RealSR}}'
drealsr_root = '{{$ICMSR_DREALSR:data/test_sets/DRealSR}}'

# Metrics of Tables 1-5 (all eleven); their weights are read from
# $ICMSR_METRIC_WEIGHTS (see docs/evaluation.md).
paper_metrics = ['lpips', 'dists', 'fid', 'niqe', 'musiq', 'maniqa', 'clipiqa', 'topiq_nr',
                 'liqe', 'psnr', 'ssim']

test_pipeline = [
    dict(type='LoadImageFromFile', key='lq'),
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='PackSRInputs', keys=('gt', 'lq')),
]


test_dataloader = [
    dict(batch_size=1, num_workers=4, persistent_workers=False, drop_last=False,
         sampler=dict(type='DefaultSampler', shuffle=False),
         dataset=dict(type='PairedImageDataset', data_root=div2k_val_root, lq_dir='test_LR',
                      gt_dir='test_HR', pipeline=test_pipeline)),
    dict(batch_size=1, num_workers=4, persistent_workers=False, drop_last=False,
         sampler=dict(type='DefaultSampler', shuffle=False),
         dataset=dict(type='PairedImageDataset', data_root=realsr_root, lq_dir='test_LR',
                      gt_dir='test_HR', pipeline=test_pipeline)),
    dict(batch_size=1, num_workers=4, persistent_workers=False, drop_last=False,
         sampler=dict(type='DefaultSampler', shuffle=False),
         dataset=dict(type='PairedImageDataset', data_root=drealsr_root, lq_dir='test_LR',
                      gt_dir='test_HR', pipeline=test_pipeline)),
]
# One evaluator per loader, same order; the prefix names the set in every metric key.
test_evaluator = [
    dict(type='IQAMetrics', prefix='DIV2K-Val', metric_names=paper_metrics),
    dict(type='IQAMetrics', prefix='RealSR', metric_names=paper_metrics),
    dict(type='IQAMetrics', prefix='DRealSR', metric_names=paper_metrics),
]
test_cfg = dict(type='MultiTestLoop')

# Validation during training: RealSR only, cheap reference metrics.
val_dataloader = [
    dict(batch_size=1, num_workers=4, persistent_workers=False, drop_last=False,
         sampler=dict(type='DefaultSampler', shuffle=False),
         dataset=dict(type='PairedImageDataset', data_root=realsr_root, lq_dir='test_LR',
                      gt_dir='test_HR', pipeline=test_pipeline))
]
val_evaluator = [
    dict(type='IQAMetrics', prefix='RealSR', metric_names=['psnr', 'ssim', 'lpips']),
]
val_cfg = dict(type='MultiValLoop')
