# OSEDiff's released model (osediff.pkl on Stable Diffusion 2.1-base) in this toolkit, with
# OSEDiff's test settings. Inference only: convert the checkpoint first,
#   python tools/convert_osediff.py osediff.pkl --out exports/osediff_sd21
# then any of
#   python tools/infer.py --weights exports/osediff_sd21 --input photos/ --output sr/
#   python tools/test.py configs/osediff_sd21.py exports/osediff_sd21/osediff_sd21.pth
#   ICMSRPipeline.from_export('exports/osediff_sd21')
# Weights: the hub id (Hugging Face cache) or a local copy through ICMSR_SD21=/weights/sd21-base.
_base_ = ['./_base_/datasets/stablesr_testsets.py', './_base_/default_runtime.py']

sd21 = '{{$ICMSR_SD21:stabilityai/stable-diffusion-2-1-base}}'

model = dict(
    type='OneStepSR',
    unet=dict(type='SDUNet', from_pretrained=sd21, subfolder='unet'),
    vae=dict(type='SDVAE', from_pretrained=sd21, subfolder='vae'),
    text_encoder=dict(type='SDTextEncoder', from_pretrained=sd21, subfolder='text_encoder'),
    tokenizer=dict(type='SDTokenizer', from_pretrained=sd21, subfolder='tokenizer'),
    scheduler=dict(type='SDScheduler', from_pretrained=sd21, subfolder='scheduler'),
    scale=4,
    # OSEDiff's generator: LoRA rank 4 (peft's default alpha 8) on the VAE encoder and on the
    # UNet (the default target lists are OSEDiff's), its trained conv_in, one step at t=999.
    generator=dict(lora_rank=4, lora_alpha=8, timestep=999, train_conv_in=True),
    # OSEDiff prompts each image with DAPE tags; this toolkit has no tag extractor, so prompts
    # come from caption files when given, else the empty prompt.
    text=dict(source='caption'),
    # OSEDiff's test script: latent tiles of 96 with overlap 32 (768 / 256 output pixels),
    # AdaIN colour correction (its default --align_method).
    test_cfg=dict(tile_size=768, tile_overlap=256, vae_tile_size=1024, vae_overlap=64,
                  color_fix='adain'),
)

# tools/test.py: OSEDiff reports RealSR and DRealSR; DIV2K-Val stays available from the base.
work_dir = 'work_dirs/osediff_sd21'
