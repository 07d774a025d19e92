"""Two-process (gloo) check of the DDP layout the docs recommend."""
import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import warnings
    warnings.simplefilter('ignore')
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(__file__))
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    from mmengine.model import MMSeparateDistributedDataParallel
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner.checkpoint import get_state_dict
    from model_testlib import build_tiny, hq_batch
    model = build_tiny('color')
    wrapped = MMSeparateDistributedDataParallel(model, find_unused_parameters=False)
    ow = build_optim_wrapper(wrapped, dict(
        constructor='ICMSROptimWrapperConstructor',
        generator=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        aux_diffusion=dict(optimizer=dict(type='AdamW', lr=1e-3))))
    data = hq_batch(batch=1)
    torch.manual_seed(100 + rank)  # each rank its own image and noise
    data['inputs']['gt'] = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)]
    log = wrapped.train_step(data, ow)
    wrapped_children = sorted(k for k, v in model._modules.items()
                              if type(v).__name__ == 'MMDistributedDataParallel')
    torch.save(dict(state=get_state_dict(model), loss=float(log['loss']),
                    wrapped=wrapped_children), os.path.join(out_dir, f'{rank}.pth'))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason='torch.distributed unavailable')
def test_separate_ddp_keeps_ranks_in_sync(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / 'init'), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'{r}.pth', weights_only=True) for r in (0, 1))
    assert r0['wrapped'] == ['aux_diffusion', 'generator']
    assert r0['loss'] != r1['loss'], 'ranks should have seen different data'
    assert r0['state'].keys() == r1['state'].keys()
    # MMEngine's get_state_dict unwraps the per-child DDP wrappers: plain keys, equal tensors.
    assert not any('.module.' in k for k in r0['state'])
    assert all(torch.equal(r0['state'][k], r1['state'][k]) for k in r0['state'])
