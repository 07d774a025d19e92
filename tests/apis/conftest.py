"""Tiny random ICM-SR inference models shared by the inference tests."""
import pytest
import torch

from apis_helpers import randomize_lora


@pytest.fixture(scope='session')
def tiny_cfg():
    from tiny_config import tiny_model_cfg
    return tiny_model_cfg(generator=dict(lora_rank=4, timestep=999, train_conv_in=True))


@pytest.fixture(scope='session')
def tiny_model(tiny_cfg):
    """Unfused tiny model with random, non-zero LoRA (treat as read-only)."""
    from icmsr.apis import init_model
    torch.manual_seed(0)
    model = init_model(tiny_cfg, None, fuse=False, allow_untrained=True)
    randomize_lora(model.generator)
    return model


@pytest.fixture(scope='session')
def tiny_sd_folder(tmp_path_factory, tiny_cfg):
    """A tiny random SD v1 layout on disk (unet/ vae/ text_encoder/ tokenizer/ scheduler/)."""
    from icmsr.registry import MODELS
    import icmsr.models  # noqa: F401
    root = tmp_path_factory.mktemp('tiny_sd')
    torch.manual_seed(1)
    for key in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        MODELS.build(dict(tiny_cfg[key])).save_pretrained(str(root / key))
    return str(root)


@pytest.fixture(scope='session')
def pretrained_cfg(tiny_cfg, tiny_sd_folder):
    """The tiny config with every component loaded from the on-disk folder (the real path)."""
    import copy
    cfg = copy.deepcopy(tiny_cfg)
    for key, typ in (('unet', 'SDUNet'), ('vae', 'SDVAE'), ('text_encoder', 'SDTextEncoder'),
                     ('tokenizer', 'SDTokenizer'), ('scheduler', 'SDScheduler')):
        cfg[key] = dict(type=typ, from_pretrained=tiny_sd_folder, subfolder=key)
    return cfg


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Run these many small forwards on one thread: on a busy 2-core machine, OpenMP workers
    spinning for a core make each tiny UNet call 10-20x slower than single-threaded."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='module')
def trained(pretrained_cfg):
    """An unfused model on the on-disk tiny base with random, non-zero LoRA ("trained")."""
    from icmsr.apis import init_model
    torch.manual_seed(0)
    model = init_model(pretrained_cfg, None, fuse=False, allow_untrained=True)
    randomize_lora(model.generator, seed=7)
    return model
