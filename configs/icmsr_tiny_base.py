# The tiny ICM-SR model on a pretrained tiny base instead of random weights: the
# architectures of icmsr_tiny.py with small but real priors (VAE autoencoder, denoising
# UNet, colormap/Canny adapters) trained on scikit-image photos by
#   python tools/pretrain_tiny_base.py --out configs/tiny_base --seed 0
# (configs/tiny_base/README.md: figures and file hashes). Loaded like SD v1-4, through
# from_pretrained + subfolder. Train/test/infer exactly as icmsr_tiny.py.
_base_ = ['./icmsr_tiny.py']

tiny_base = '{{ fileDirname }}/tiny_base'
model = dict(
    unet=dict(_delete_=True, type='SDUNet', from_pretrained=tiny_base, subfolder='unet'),
    vae=dict(_delete_=True, type='SDVAE', from_pretrained=tiny_base, subfolder='vae'),
    text_encoder=dict(_delete_=True, type='SDTextEncoder', from_pretrained=tiny_base,
                      subfolder='text_encoder'),
    tokenizer=dict(_delete_=True, type='SDTokenizer', from_pretrained=tiny_base,
                   subfolder='tokenizer'),
    scheduler=dict(_delete_=True, type='SDScheduler', from_pretrained=tiny_base,
                   subfolder='scheduler'),
    # The adapters were pretrained on the 8x8 antialiased colormap and grayscale Canny.
    condition=dict(
        adapters=[dict(type='SDT2IAdapter', from_pretrained=tiny_base, subfolder='adapter_color'),
                  dict(type='SDT2IAdapter', from_pretrained=tiny_base, subfolder='adapter_canny')],
        extractor=dict(recipe='antialiased8')),
    # The base was pretrained with the empty prompt only and its text encoder is random,
    # so classifier-free guidance would amplify nothing but that encoder's response to
    # the negative prompt: the teacher is queried unguided (docs/training.md: held-out
    # PSNR after 200 iterations 9.1 dB at 7.5, 17.8 dB at 1.0).
    regularizer=dict(cfg_scale=1.0),
)
# LoRA rank 4 on a UNet this small barely moves in 200 iterations at the tiny config's
# 1e-4 (docs/training.md).
optim_wrapper = dict(
    generator=dict(optimizer=dict(lr=1e-3)),
    aux_diffusion=dict(optimizer=dict(lr=1e-3)))
work_dir = 'work_dirs/icmsr_tiny_base'
