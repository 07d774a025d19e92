"""Worker of test_distributed.py: two ICM-SR training steps under MMEngine's DDP wrapper.

Run as ``torchrun --nproc_per_node=2 ddp_worker.py OUT_DIR`` (gloo, CPU). Rank r
trains on its half of a fixed batch of 4 pairs and saves its trainable weights
to ``OUT_DIR/rank{r}.pt``. The functions here are also used by the test to run
the single-process reference on the whole batch.

Randomness is made a deterministic function of each sample, so that a sample
sees the same timestep and noise whichever process (and batch position) it is
in: timesteps are fixed, noise is an elementwise function of the latent, the
VAE posterior mode is used and the batch carries its own LQ (no degradation).
"""
import copy
import os
import os.path as osp
import sys
from typing import Callable

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NUM_STEPS = 1
GLOBAL_BATCH = 4


def patch_randomness() -> Callable[[], None]:
    """Replace the timestep/noise draws of the regularizer and the aux model.

    Returns:
        A function that puts the original draws back (the test process goes on
        running other tests after the single-process reference).
    """
    import icmsr.models.aux_diffusion as aux
    import icmsr.models.regularizer as reg
    saved = [(m, m.sample_timesteps, m.sample_noise) for m in (reg, aux)]

    def restore() -> None:
        for module, sample_timesteps, sample_noise in saved:
            module.sample_timesteps = sample_timesteps
            module.sample_noise = sample_noise

    def timesteps(low, high, batch, device, generator):
        return torch.full((batch, ), (low + high) // 2, dtype=torch.long, device=device)

    def noise(like, generator):
        return torch.sin(like.detach().float() * 37.0 + 1.0)

    for module in (reg, aux):
        module.sample_timesteps = timesteps
        module.sample_noise = noise
    return restore


def load_tiny_cfg():
    """The tiny config with deterministic encoding and plain SGD.

    SGD makes the weight change proportional to the gradient, so comparing
    weights compares gradients (Adam's first step is nearly sign(gradient)).
    """
    from mmengine.config import Config
    os.environ.setdefault('ICMSR_TINY_DATA', '/nonexistent')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'icmsr_tiny.py'))
    cfg.model.generator.train_latent = 'mode'
    for part in ('generator', 'aux_diffusion'):
        cfg.optim_wrapper[part].optimizer = dict(type='SGD', lr=0.5)
    return cfg


def build_model(cfg):
    """Build the tiny ICMSR with seeded initial weights."""
    from icmsr.registry import MODELS
    from icmsr.utils.setup_env import register_all_modules
    register_all_modules()
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(cfg.model))


def make_batch(indices):
    """Fixed paired samples (GT 64 px, LQ 16 px) selected by global index."""
    from icmsr.structures import SRDataSample
    gen = torch.Generator().manual_seed(123)
    gts = [(torch.rand(3, 64, 64, generator=gen) * 255).to(torch.uint8)
           for _ in range(GLOBAL_BATCH)]
    lqs = [torch.nn.functional.avg_pool2d(g.float()[None], 4)[0].round().to(torch.uint8)
           for g in gts]
    return dict(inputs=dict(gt=[gts[i] for i in indices], lq=[lqs[i] for i in indices]),
                data_samples=[SRDataSample(metainfo=dict(key=str(i), prompt=''))
                              for i in indices])


def trainable_params(model):
    """Trainable parameters by name (``.module.`` of DDP-wrapped children removed), on CPU."""
    return {k.replace('.module.', '.'): p.detach().cpu().clone()
            for k, p in model.named_parameters() if p.requires_grad}


def main(out_dir: str) -> None:
    """Train NUM_STEPS steps on this rank's half of the batch, save the weights."""
    torch.set_num_threads(1)
    import torch.distributed as dist
    from mmengine.dist import get_rank, get_world_size
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODEL_WRAPPERS
    # mmengine's init_dist('pytorch') calls torch.cuda.set_device, which fails on a
    # CPU-only machine; the process group itself is all the wrappers need.
    dist.init_process_group('gloo')
    rank, world = get_rank(), get_world_size()
    patch_randomness()
    cfg = load_tiny_cfg()
    model = build_model(cfg)
    wrapper_cfg = copy.deepcopy(cfg.model_wrapper_cfg)
    wrapper_cfg['module'] = model
    wrapped = MODEL_WRAPPERS.build(wrapper_cfg)
    optim = build_optim_wrapper(wrapped, copy.deepcopy(cfg.optim_wrapper))
    per_rank = GLOBAL_BATCH // world
    batch = make_batch(list(range(rank * per_rank, (rank + 1) * per_rank)))
    wrapped.train()
    for _ in range(NUM_STEPS):
        wrapped.train_step(batch, optim)
    torch.save(dict(params=trainable_params(wrapped.module),
                    checkpoint_keys=sorted(wrapped.module.state_dict()),
                    wrapper=type(wrapped).__name__,
                    children={n: type(c).__name__ for n, c in wrapped.module.named_children()}),
               osp.join(out_dir, f'rank{rank}.pt'))


if __name__ == '__main__':
    main(sys.argv[1])
