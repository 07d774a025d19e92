"""Component builders: architectures, save_pretrained -> from_pretrained, clear errors."""
import pytest
import torch

from tiny_config import arch_entry as arch, tiny_model_cfg
from icmsr.models.backbones import (PretrainedWeightsError,
                                    build_scheduler, build_t2i_adapter, build_text_encoder,
                                    build_tokenizer, build_unet, build_vae)


TINY_TOKENIZER = tiny_model_cfg(None)['tokenizer']


def _count(build, cfg):
    with torch.device('meta'):
        return sum(p.numel() for p in build(from_config=cfg).parameters())


def test_sd14_architectures_match_published_parameter_counts():
    # Published sizes of CompVis/stable-diffusion-v1-4's components.
    assert _count(build_unet, arch('sd14_unet')) == 859_520_964
    assert _count(build_vae, arch('sd14_vae')) == 83_653_863
    assert _count(build_text_encoder, arch('sd14_text_encoder')) == 123_060_480


def test_sd14_adapters_feed_every_unet_down_block():
    with torch.device('meta'):
        color = build_t2i_adapter(from_config=arch('adapter_color_sd14'))
        canny = build_t2i_adapter(from_config=arch('adapter_canny_sd14'))
        fc = color(torch.empty(1, 3, 512, 512))
        fe = canny(torch.empty(1, 1, 512, 512))
    expect = [(320, 64), (640, 32), (1280, 16), (1280, 8)]
    assert [(f.shape[1], f.shape[2]) for f in fc] == expect
    assert [(f.shape[1], f.shape[2]) for f in fe] == expect


def test_scheduler_is_sd_schedule_without_clipping():
    sched = build_scheduler(from_config=arch('sd14_scheduler'))
    assert sched.config.clip_sample is False
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    expect = torch.cumprod(1 - betas, 0).float()
    assert torch.allclose(sched.alphas_cumprod, expect, rtol=1e-5)


def test_tiny_config_loads_the_shipped_byte_level_tokenizer():
    tok = build_tokenizer(**{k: v for k, v in TINY_TOKENIZER.items() if k != 'type'})
    ids = tok(['a photo of a cat'], padding='max_length', max_length=77,
              return_tensors='pt').input_ids
    assert ids.shape == (1, 77) and len(tok) == 514
    # One token per byte, printable bytes from '!' (id 0) on, word ends 256 higher.
    byte = [ord(c) - ord('!') for c in 'aphoto']
    assert ids[0].tolist()[:7] == [tok.bos_token_id, byte[0] + 256, *byte[1:5], byte[5] + 256]
    assert tok.eos_token_id in ids[0].tolist()
    with pytest.raises(ValueError, match='from_pretrained'):
        build_tokenizer(from_config=dict(kind='tiny'))


def test_save_pretrained_folders_load_back_through_users_path(tmp_path):
    torch.manual_seed(0)
    root = tmp_path / 'tiny-sd'
    unet = build_unet(from_config=arch('tiny_unet'))
    vae = build_vae(from_config=arch('tiny_vae'))
    text = build_text_encoder(from_config=arch('tiny_text_encoder'))
    tok = build_tokenizer(**{k: v for k, v in TINY_TOKENIZER.items() if k != 'type'})
    sched = build_scheduler(from_config=arch('sd14_scheduler'))
    unet.save_pretrained(root / 'unet')
    vae.save_pretrained(root / 'vae')
    text.save_pretrained(root / 'text_encoder')
    tok.save_pretrained(root / 'tokenizer')
    sched.save_pretrained(root / 'scheduler')
    color = build_t2i_adapter(from_config=arch('tiny_adapter_color'))
    canny = build_t2i_adapter(from_config=arch('tiny_adapter_canny'))
    color.save_pretrained(tmp_path / 'color')
    canny.save_pretrained(tmp_path / 'canny')

    pairs = [(unet, build_unet(from_pretrained=str(root), subfolder='unet')),
             (vae, build_vae(from_pretrained=str(root), subfolder='vae')),
             (text, build_text_encoder(from_pretrained=str(root), subfolder='text_encoder',
                                       torch_dtype='float32')),
             (color, build_t2i_adapter(from_pretrained=str(tmp_path / 'color'))),
             (canny, build_t2i_adapter(from_pretrained=str(tmp_path / 'canny')))]
    for ref, loaded in pairs:
        ref_sd, new_sd = ref.state_dict(), loaded.state_dict()
        assert ref_sd.keys() == new_sd.keys()
        assert all(torch.equal(ref_sd[k], new_sd[k]) for k in ref_sd)
        assert not any(p.requires_grad for p in loaded.parameters())
    tok2 = build_tokenizer(from_pretrained=str(root), subfolder='tokenizer')
    assert tok2('a cat').input_ids == tok('a cat').input_ids
    sched2 = build_scheduler(from_pretrained=str(root), subfolder='scheduler')
    assert torch.equal(sched2.alphas_cumprod, sched.alphas_cumprod)
    from icmsr.models import TeacherCondition
    multi = TeacherCondition('multi', [dict(type='SDT2IAdapter', from_pretrained=str(tmp_path / 'color')),
                                       dict(type='SDT2IAdapter', from_pretrained=str(tmp_path / 'canny'))])
    assert len(multi.adapter.adapters) == 2
    half = build_unet(from_pretrained=str(root), subfolder='unet', torch_dtype='bf16')
    assert half.dtype == torch.bfloat16


def test_missing_local_folder_names_the_weights_to_download(tmp_path):
    with pytest.raises(PretrainedWeightsError) as err:
        build_unet(from_pretrained=str(tmp_path / 'nowhere'))
    msg = str(err.value)
    assert 'CompVis/stable-diffusion-v1-4' in msg and 'TencentARC/t2iadapter_canny_sd14v1' in msg
    assert 'nowhere' in msg
    (tmp_path / 'sd').mkdir()
    with pytest.raises(PretrainedWeightsError, match="no subfolder 'vae'"):
        build_vae(from_pretrained=str(tmp_path / 'sd'))


def test_uncached_hub_id_offline_gives_one_clear_error():
    with pytest.raises(PretrainedWeightsError) as err:
        build_t2i_adapter(from_pretrained='TencentARC/t2iadapter_color_sd14v1',
                          local_files_only=True)
    assert 'huggingface-cli download' in str(err.value)


def test_exactly_one_source_required():
    with pytest.raises(ValueError, match='exactly one'):
        build_unet()
    with pytest.raises(ValueError, match='exactly one'):
        build_unet(from_pretrained='a/b', from_config=arch('tiny_unet'))
