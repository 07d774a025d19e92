# ICM-SR with tiny random-weight architectures: the same model, losses, optimizers,
# hooks and loops as icmsr_multi.py, small enough to train end to end on 2 CPU cores
# with nothing downloaded (tools/demo.sh). The numbers it produces only show that
# the pipeline runs; they say nothing about the method.
#
# Data (written by tools/demo.sh, or by `python tools/demo.py --prepare-only`):
#   <tiny_root>/train/*.png           scikit-image sample photos, 128 px
#   <tiny_root>/test/test_{LR,HR}/    synthetic pairs (seed 0), GT 128 px, LQ 32 px
# tiny_root defaults to work_dirs/icmsr_tiny/data; set ICMSR_TINY_DATA to move it.
_base_ = ['./icmsr_multi.py', './_base_/models/sd14_arch.py']

tiny_root = '{{$ICMSR_TINY_DATA:work_dirs/icmsr_tiny/data}}'
max_iters = 200
crop_size = 64

# The one definition of the tiny architectures: the same block types as SD v1-4 and the
# TencentARC adapters (configs/_base_/models/sd14_arch.py), a few thousand channels.
tiny_unet = dict(
    sample_size=8, in_channels=4, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0,
    down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                      'DownBlock2D'),
    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                    'CrossAttnUpBlock2D'),
    block_out_channels=(32, 32, 64, 64), layers_per_block=1, downsample_padding=1,
    mid_block_scale_factor=1, act_fn='silu', norm_num_groups=8, norm_eps=1e-5,
    cross_attention_dim=32, attention_head_dim=4)
tiny_vae = dict(
    in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D', ) * 4,
    up_block_types=('UpDecoderBlock2D', ) * 4, block_out_channels=(8, 16, 16, 16),
    layers_per_block=1, act_fn='silu', latent_channels=4, norm_num_groups=8, sample_size=64,
    scaling_factor=0.18215)
tiny_text_encoder = dict(
    vocab_size=1000, hidden_size=32, intermediate_size=37, projection_dim=32,
    num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
    hidden_act='quick_gelu', layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2,
    pad_token_id=1)
tiny_adapter_color = dict(in_channels=3, channels=(32, 32, 64), num_res_blocks=1,
                          downscale_factor=8, adapter_type='light_adapter')
tiny_adapter_canny = dict(in_channels=1, channels=(32, 32, 64, 64), num_res_blocks=1,
                          downscale_factor=8, adapter_type='full_adapter')

model = dict(
    unet=dict(_delete_=True, type='SDUNet', from_config=tiny_unet),
    vae=dict(_delete_=True, type='SDVAE', from_config=tiny_vae),
    text_encoder=dict(_delete_=True, type='SDTextEncoder', from_config=tiny_text_encoder),
    # Byte-level vocabulary (514 tokens, no merges), shipped with the tiny base.
    tokenizer=dict(_delete_=True, type='SDTokenizer', from_pretrained='{{ fileDirname }}/tiny_base',
                   subfolder='tokenizer'),
    scheduler=dict(_delete_=True, type='SDScheduler', from_config={{_base_.sd14_scheduler}}),
    # The random frozen weights are drawn from this seed, so every build of this config
    # (training, tools/test.py, tools/infer.py) has the base its LoRA was trained on.
    base_seed=0,
    # The paper's 8x8 colormap grid (TencentARC's H//64 grid would be 1x1 on 64 px crops).
    condition=dict(adapters=[dict(type='SDT2IAdapter', from_config=tiny_adapter_color),
                             dict(type='SDT2IAdapter', from_config=tiny_adapter_canny)],
                   extractor=dict(colormap_size=(8, 8))),
    # The LPIPS term stays, on SqueezeNet (its calibrated heads ship with the lpips
    # wheel) with a random backbone on purpose: no ImageNet weights offline, and
    # building VGG16 alone would take longer than the tiny UNet's training step.
    lpips=dict(_delete_=True, net='squeeze', backbone_weights=None),
    # Blur kernels that fit the smallest intermediate image of a 64 px crop.
    degradation=dict(kernel_sizes=(7, 9, 11)),
    # No tagger weights offline: empty prompts, said explicitly.
    text=dict(_delete_=True, source='empty'),
)

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='RandomCropPad', crop_size=crop_size, keys=('gt', )),
    dict(type='RandomFlip', keys=('gt', ), prob=0.5),
    dict(type='PackSRInputs', keys=('gt', )),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    # RepeatDataset: 8 images would end an epoch every 4 iterations, and MMEngine's
    # infinite iterator pauses 2 s at each epoch end.
    dataset=dict(
        _delete_=True,
        type='RepeatDataset',
        times=200,
        dataset=dict(type='HQImageDataset', data_root=tiny_root, folders=['train'],
                     on_bad_image='skip', pipeline=train_pipeline)))

test_pipeline = [
    dict(type='LoadImageFromFile', key='lq'),
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='PackSRInputs', keys=('gt', 'lq')),
]
# Offline metrics only: PSNR/SSIM (Y channel) and NIQE (basicsr's parameters).
# Add 'lpips' when $ICMSR_METRIC_WEIGHTS holds its weights.
tiny_metrics = ['psnr', 'ssim', 'niqe']
test_dataloader = [
    dict(batch_size=2, num_workers=0, persistent_workers=False, drop_last=False,
         sampler=dict(type='DefaultSampler', shuffle=False),
         dataset=dict(type='PairedImageDataset', data_root=tiny_root + '/test',
                      lq_dir='test_LR', gt_dir='test_HR', pipeline=test_pipeline)),
]
test_evaluator = [
    dict(type='IQAMetrics', prefix='Synthetic', metric_names=tiny_metrics),
]
val_dataloader = test_dataloader
val_evaluator = test_evaluator

optim_wrapper = dict(
    generator=dict(optimizer=dict(lr=1e-4)),
    aux_diffusion=dict(optimizer=dict(lr=1e-4)))
param_scheduler = [
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=max_iters, T_max=max_iters,
         eta_min=0.0),
]
# Validation once, at the end.
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
auto_scale_lr = dict(base_batch_size=2)

default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=100, max_keep_ckpts=2),
    visualization=dict(interval=100, max_images=2),
)
log_processor = dict(window_size=20)
# Grids and scalars as files and as TensorBoard events (tensorboard --logdir work_dirs/icmsr_tiny).
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(vis_backends=vis_backends)
env_cfg = dict(mp_cfg=dict(mp_start_method='fork', opencv_num_threads=1),
               dist_cfg=dict(backend='gloo'))
work_dir = 'work_dirs/icmsr_tiny'
