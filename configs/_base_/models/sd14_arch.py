# Architectures of Stable Diffusion v1-4 and the TencentARC sd14 T2I-Adapters as data.
# Built with random weights (`from_config=`) they are what the memory and speed benchmarks
# measure; with `from_pretrained=` the same classes load the real weights instead.
# Read them with `Config.fromfile('configs/_base_/models/sd14_arch.py')` or inherit this file.

# CompVis/stable-diffusion-v1-4/unet/config.json
sd14_unet = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0,
    down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                      'DownBlock2D'),
    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                    'CrossAttnUpBlock2D'),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn='silu', norm_num_groups=32, norm_eps=1e-05,
    cross_attention_dim=768, attention_head_dim=8)
# CompVis/stable-diffusion-v1-4/vae (downsampling 8, 4 latent channels)
sd14_vae = dict(
    in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D', ) * 4,
    up_block_types=('UpDecoderBlock2D', ) * 4, block_out_channels=(128, 256, 512, 512),
    layers_per_block=2, act_fn='silu', latent_channels=4, norm_num_groups=32, sample_size=512,
    scaling_factor=0.18215)
# CLIP ViT-L/14 text tower of SD v1-4
sd14_text_encoder = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, projection_dim=768,
    num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
    hidden_act='quick_gelu', layer_norm_eps=1e-05, bos_token_id=0, eos_token_id=2,
    pad_token_id=1)
# SD's noise schedule as a DDPMScheduler; a bare DDPMScheduler() would clip x0 (clip_sample=True)
sd14_scheduler = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear',
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type='epsilon')
# TencentARC/t2iadapter_color_sd14v1: light adapter on RGB colormaps.
adapter_color_sd14 = dict(in_channels=3, channels=(320, 640, 1280), num_res_blocks=4,
                          downscale_factor=8, adapter_type='light_adapter')
# TencentARC/t2iadapter_canny_sd14v1: full adapter on 1-channel edge maps.
adapter_canny_sd14 = dict(in_channels=1, channels=(320, 640, 1280, 1280), num_res_blocks=2,
                          downscale_factor=8, adapter_type='full_adapter')
