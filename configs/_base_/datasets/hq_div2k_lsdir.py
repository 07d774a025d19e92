# Training images of the paper (Sec. 5.1): DIV2K train (800) + LSDIR train (~85K) HQ
# images, random 512x512 crops and horizontal flips. LQ inputs are synthesised on the
# fly by the model's training step (model.degradation, Real-ESRGAN), so only HQ is read.
#
# Paths: `<data_root>/DIV2K/DIV2K_train_HR/*.png` and `<data_root>/LSDIR/HR/train/**`
# (scanned recursively). Set the root without editing configs:
#   ICMSR_DATA_ROOT=/mnt/sr_data python tools/train.py ...
# or override one key: --cfg-options train_dataloader.dataset.folders="['a','b']".
data_root = '{{$ICMSR_DATA_ROOT:data}}'
train_crop_size = 512

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    # Images smaller than the crop are reflect-padded (LSDIR has a few).
    dict(type='RandomCropPad', crop_size=train_crop_size, keys=('gt', )),
    dict(type='RandomFlip', keys=('gt', ), prob=0.5),
    dict(type='PackSRInputs', keys=('gt', )),
]

train_dataloader = dict(
    # PER GPU (MMEngine semantics). Paper: 4 per GPU x 4 GPUs, see the schedule config.
    batch_size=4,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='HQImageDataset',
        data_root=data_root,
        folders=['DIV2K/DIV2K_train_HR', 'LSDIR/HR/train'],
        # A corrupt or unreadable image is skipped with a warning, not fatal.
        on_bad_image='skip',
        pipeline=train_pipeline),
)
