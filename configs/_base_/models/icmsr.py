# ICM-SR on Stable Diffusion v1-4 with the TencentARC T2I-Adapters (paper, Sec. 4-5).
# Generator: OSEDiff's one-step SD (LoRA rank 4 on the VAE encoder and the UNet, t=999).
# Regularizer: VSD in x0 form against the teacher UNet conditioned on F_c through the
# adapters (colormap + Canny by default), CFG 7.5, t ~ U[20, 980).
# Auxiliary (fake-score) diffusion: LoRA rank 4 on the same UNet, trained without adapter.
#
# Weights: hub ids by default (Hugging Face cache), or local folders through
#   ICMSR_SD14=/weights/stable-diffusion-v1-4
#   ICMSR_ADAPTER_COLOR=/weights/t2iadapter_color_sd14v1
#   ICMSR_ADAPTER_CANNY=/weights/t2iadapter_canny_sd14v1
sd14 = '{{$ICMSR_SD14:CompVis/stable-diffusion-v1-4}}'
adapter_color = dict(type='SDT2IAdapter',
                     from_pretrained='{{$ICMSR_ADAPTER_COLOR:TencentARC/t2iadapter_color_sd14v1}}')
adapter_canny = dict(type='SDT2IAdapter',
                     from_pretrained='{{$ICMSR_ADAPTER_CANNY:TencentARC/t2iadapter_canny_sd14v1}}')
lora_rank = 4

model = dict(
    type='ICMSR',
    unet=dict(type='SDUNet', from_pretrained=sd14, subfolder='unet'),
    vae=dict(type='SDVAE', from_pretrained=sd14, subfolder='vae'),
    text_encoder=dict(type='SDTextEncoder', from_pretrained=sd14, subfolder='text_encoder'),
    tokenizer=dict(type='SDTokenizer', from_pretrained=sd14, subfolder='tokenizer'),
    scheduler=dict(type='SDScheduler', from_pretrained=sd14, subfolder='scheduler'),
    scale=4,
    generator=dict(lora_rank=lora_rank, timestep=999),
    # Prompts as OSEDiff: RAM tags of each GT crop in training, DAPE tags of the LQ at test.
    # Weights: ICMSR_RAM=/weights/ram_swin_large_14m.pth, ICMSR_DAPE=/weights/DAPE.pth (the
    # build stops naming them when absent); the `ram` package installs from its repository.
    text=dict(source='extractor', extractor=dict(type='RAMTagger', variant='ram'), image='gt',
              test_extractor=dict(type='RAMTagger', variant='dape'), test_image='lq'),
    # Inference (val/test/infer): 512 px tiles; no colour correction in the paper's tables
    # (OSEDiff's test script defaults to 'adain').
    test_cfg=dict(tile_size=512, tile_overlap=64, vae_tile_size=512, vae_overlap=64,
                  color_fix='none'),
    # Real-ESRGAN second-order degradation, x4, on the batch's device.
    # resize_back: the LQ goes back to the GT size with a random mode, as OSEDiff trains.
    degradation=dict(type='RealESRGANDegradation', scale=4, resize_back=True),
    # The teacher's structural condition F_c (Table 2): what the extractor computes and the
    # adapters it feeds, in MultiAdapter order [colormap, canny]; scale: Table 4 (0.5, 1.0).
    # The extractor makes F_c as TencentARC trained the adapters: cv2 bicubic colormap on an
    # H//64 x W//64 grid (8x8 at 512 px), nearest back up; Canny (100, 200) on the colour image.
    condition=dict(kind='multi', adapters=[adapter_color, adapter_canny], weights=[1.0, 1.0],
                   scale=1.0),
    regularizer=dict(type='VSDRegularizer', cfg_scale=7.5, t_range=(20, 980)),
    # use_adapter: Table 5 (False = ours; True = eps_psi also sees A(F_c)).
    # lora_preset 'osediff': OSEDiff's LoRA selection rule (conv_in included);
    # noise_source 'own': fresh t' and noise as OSEDiff ('regularizer': Algorithm 1).
    aux_diffusion=dict(lora_rank=lora_rank, t_range=(0, 1000), use_adapter=False,
                       lora_preset='osediff', noise_source='own'),
    # OSEDiff's training LPIPS (VGG); the ImageNet backbone must be present.
    lpips=dict(net='vgg', require_backbone=True),
    loss_weights=dict(l2=1.0, lpips=2.0, reg=1.0),
    data_preprocessor=dict(type='SRDataPreprocessor'),
)

# Per-child DDP (generator, aux_diffusion): the two optimizer steps of train_step each
# back-propagate through one child only, and every trainable parameter of that child is
# used in its forward, so find_unused_parameters stays False. The constant schedule
# buffers need no broadcast (broadcast_buffers=False also lets the visualisation hook
# run a forward pass outside the training step).
model_wrapper_cfg = dict(
    type='MMSeparateDistributedDataParallel',
    broadcast_buffers=False,
    find_unused_parameters=False)
