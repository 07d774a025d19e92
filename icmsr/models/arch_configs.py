"""Architecture configs (``from_config`` dicts) of the diffusion components.

Two families, same code paths:

* ``SD14_*`` and ``T2I_ADAPTER_*_SD14``: the real Stable Diffusion v1-4 and
  TencentARC ``t2iadapter_{color,canny}_sd14v1`` architectures. Built with random
  weights they are what the memory benchmark measures; with ``from_pretrained``
  the weights come from the hub folders instead.
* ``TINY_*``: the same block types shrunk to a few thousand channels in total,
  used by the tests, the demo config and CI. ``TINY_UNET`` matches the tiny
  adapters' channel list so adapter features add to the UNet's down blocks.

The dicts are plain data; copy them (``copy.deepcopy``) before editing.
"""
from typing import Any, Dict

# Stable Diffusion v1-4 UNet (CompVis/stable-diffusion-v1-4/unet/config.json).
SD14_UNET: Dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                      'CrossAttnDownBlock2D', 'DownBlock2D'),
    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                    'CrossAttnUpBlock2D'),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn='silu',
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

# Stable Diffusion v1-4 VAE (downsampling factor 8, 4 latent channels).
SD14_VAE: Dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=('DownEncoderBlock2D', ) * 4,
    up_block_types=('UpDecoderBlock2D', ) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn='silu',
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# CLIP ViT-L/14 text tower as shipped in SD v1-4's text_encoder folder.
SD14_TEXT_ENCODER: Dict[str, Any] = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act='quick_gelu',
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

# SD's noise schedule as a DDPMScheduler. A bare DDPMScheduler() would clip
# x0 to [-1, 1] (clip_sample=True), which SD never does.
SD14_SCHEDULER: Dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule='scaled_linear',
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type='epsilon',
)

# TencentARC/t2iadapter_color_sd14v1: light adapter on RGB colormaps.
T2I_ADAPTER_COLOR_SD14: Dict[str, Any] = dict(
    in_channels=3,
    channels=(320, 640, 1280),
    num_res_blocks=4,
    downscale_factor=8,
    adapter_type='light_adapter',
)

# TencentARC/t2iadapter_canny_sd14v1: full adapter on 1-channel edge maps.
T2I_ADAPTER_CANNY_SD14: Dict[str, Any] = dict(
    in_channels=1,
    channels=(320, 640, 1280, 1280),
    num_res_blocks=2,
    downscale_factor=8,
    adapter_type='full_adapter',
)

# ----------------------------------------------------------------------------
# Tiny stand-ins with the same block types (tests, demo, CI).
TINY_UNET: Dict[str, Any] = dict(
    SD14_UNET,
    sample_size=8,
    block_out_channels=(32, 32, 64, 64),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=32,
    attention_head_dim=4,
)

TINY_VAE: Dict[str, Any] = dict(
    SD14_VAE,
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=1,
    norm_num_groups=8,
    sample_size=64,
)

TINY_TEXT_ENCODER: Dict[str, Any] = dict(
    SD14_TEXT_ENCODER,
    vocab_size=1000,
    hidden_size=32,
    intermediate_size=37,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
)

TINY_ADAPTER_COLOR: Dict[str, Any] = dict(
    T2I_ADAPTER_COLOR_SD14, channels=(32, 32, 64), num_res_blocks=1)

TINY_ADAPTER_CANNY: Dict[str, Any] = dict(
    T2I_ADAPTER_CANNY_SD14, channels=(32, 32, 64, 64), num_res_blocks=1)

# Where the real weights live on the hub, for error messages and configs.
HUB_IDS: Dict[str, str] = dict(
    sd14='CompVis/stable-diffusion-v1-4',
    adapter_color='TencentARC/t2iadapter_color_sd14v1',
    adapter_canny='TencentARC/t2iadapter_canny_sd14v1',
)
