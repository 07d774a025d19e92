"""``torchrun --nproc_per_node=2 tools/train.py configs/icmsr_tiny.py --launcher pytorch`` on CPU.

MMEngine's own start-up pins each process to ``cuda:LOCAL_RANK``; the tools
start the process group themselves (gloo without CUDA), so the command a user
runs on a GPU node also trains on a machine without one. Both ranks must end
with identical trainable weights that differ from the start (the gradients were
all-reduced, not skipped).
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
TINY = osp.join(ROOT, 'configs', 'icmsr_tiny.py')
ITERS = 2

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason='torch.distributed with gloo is required')


def _probe_config(tmp_path) -> str:
    """The tiny config plus the per-rank weight probe; one checkpoint, at the end."""
    path = tmp_path / 'icmsr_tiny_probe.py'
    path.write_text(
        f'_base_ = [{TINY!r}]\n'
        "custom_imports = dict(imports=['rank_probe'], allow_failed_imports=False)\n"
        f"custom_hooks = [dict(type='RankWeightsProbeHook', out_dir={str(tmp_path)!r})]\n"
        # Only rank 0 enters CheckpointHook's save: it must not wait for the other rank.
        f'default_hooks = dict(checkpoint=dict(interval={ITERS}, save_last=True))\n')
    return str(path)


def test_torchrun_train_two_cpu_ranks_end_equal(tiny_data, free_port, tmp_path):
    env = dict(os.environ, ICMSR_TINY_DATA=str(tiny_data), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([ROOT, HERE]), CUDA_VISIBLE_DEVICES='')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
           '--master_addr=127.0.0.1', f'--master_port={free_port}',
           'tools/train.py', _probe_config(tmp_path), '--launcher', 'pytorch',
           '--work-dir', str(tmp_path / 'work'),
           '--cfg-options', f'train_cfg.max_iters={ITERS}', 'train_cfg.val_interval=1000',
           'default_hooks.logger.interval=1', 'default_hooks.visualization.interval=1000']
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f'Iter(train) [{ITERS}/{ITERS}]' in proc.stdout + proc.stderr

    before, after = ({r: torch.load(tmp_path / f'rank{r}_{when}.pt', weights_only=True)
                      for r in (0, 1)} for when in ('before', 'after'))
    for r in (0, 1):
        assert after[r]['world_size'] == 2 and after[r]['backend'] == 'gloo'
        assert after[r]['iter'] == ITERS
        assert after[r]['wrapper'] == 'MMSeparateDistributedDataParallel'
    p0, p1 = after[0]['params'], after[1]['params']
    assert p0.keys() == p1.keys() and len(p0) > 0
    assert any(k.startswith('generator.') for k in p0)
    assert any(k.startswith('aux_diffusion.') for k in p0)
    for key in p0:
        assert torch.equal(p0[key], p1[key]), key
    # The checkpoint holds both ranks' random streams (gathered on every rank before the save).
    ckpt = torch.load(tmp_path / 'work' / f'iter_{ITERS}.pth', map_location='cpu',
                      weights_only=False)
    saved = ckpt['random_states']
    assert saved['world_size'] == 2 and len(saved['ranks']) == 2
    moved = [k for k in p0 if not torch.equal(p0[k], before[0]['params'][k])]
    assert any(k.startswith('generator.') for k in moved)
    assert any(k.startswith('aux_diffusion.') for k in moved)


def test_backend_follows_the_machine():
    from icmsr.engine.dist import choose_backend
    assert choose_backend('nccl', cuda_available=False) == 'gloo'
    assert choose_backend(None, cuda_available=True) == 'nccl'
    assert choose_backend('gloo', cuda_available=True) == 'gloo'


def test_cpu_wrapper_overrides_the_runner_device_ids():
    from mmengine.config import Config

    from icmsr.engine.dist import keep_wrapper_on_cpu
    cfg = Config.fromfile(TINY)
    keep_wrapper_on_cpu(cfg)
    assert cfg.model_wrapper_cfg.type == 'MMSeparateDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None
    bare = dict(find_unused_parameters=True)
    keep_wrapper_on_cpu(bare)
    assert bare['model_wrapper_cfg'] == dict(type='MMDistributedDataParallel', device_ids=None,
                                             broadcast_buffers=False, find_unused_parameters=True)


def test_slurm_variables_map_to_torchrun_ones():
    from icmsr.engine.dist import slurm_env
    env = slurm_env(dict(SLURM_PROCID='3', SLURM_NTASKS='8', SLURM_NODELIST='n[1-2]',
                         SLURM_LOCALID='1', MASTER_ADDR='10.0.0.1'), port=1234)
    assert env == dict(RANK='3', WORLD_SIZE='8', LOCAL_RANK='1', MASTER_ADDR='10.0.0.1',
                       MASTER_PORT='1234')
    with pytest.raises(KeyError, match='srun'):
        slurm_env({})


def test_missing_torchrun_variables_are_named(monkeypatch):
    from icmsr.engine.dist import init_process_group_for
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    assert init_process_group_for('none') is False
    with pytest.raises(KeyError, match="RANK.*torchrun"):
        init_process_group_for('pytorch')
    with pytest.raises(ValueError, match='launcher'):
        init_process_group_for('mpi')
