"""tools/train.py, --resume and tools/test.py on the tiny config, as a user runs them.

One subprocess chain (train 4 iterations -> resume to 6 -> test) checks the
checkpoint contents on the real file: trainable weights only (no frozen SD
tensors), both optimizers, schedulers, loop state and random states, loadable
with ``weights_only=True``.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'icmsr_tiny.py')


def _run(args, env):
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def _short(iters):
    return ['--cfg-options', f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000',
            f'param_scheduler.0.end={iters}', f'param_scheduler.0.T_max={iters}',
            'default_hooks.logger.interval=1', 'default_hooks.checkpoint.interval=2',
            'default_hooks.visualization.interval=2']


def test_train_resume_test_chain(tiny_data, tmp_path):
    env = dict(os.environ, ICMSR_TINY_DATA=str(tiny_data), OMP_NUM_THREADS='1')
    work = tmp_path / 'work'
    log = _run(['tools/train.py', TINY, '--work-dir', str(work)] + _short(4), env)
    # Progress line with ETA, lr of both optimizers and every loss term.
    line = [ln for ln in log.splitlines() if 'Iter(train) [4/4]' in ln][0]
    for field in ('eta:', 'generator.lr', 'aux_diffusion.lr', 'loss_l2', 'loss_lpips',
                  'loss_reg', 'loss_aux', 'grad_norm'):
        assert field in line, field

    ckpt_path = work / 'iter_4.pth'
    ckpt = torch.load(ckpt_path, map_location='cpu', weights_only=True)
    keys = list(ckpt['state_dict'])
    # The trained tensors, and the fingerprint of the frozen base they belong to.
    assert keys and all(k.startswith(('generator.', 'aux_diffusion.')) or k == '_extra_state'
                        for k in keys), keys[:5]
    assert not any('unet.' == k[:5] or k.startswith(('text.', 'regularizer.')) for k in keys)
    assert set(ckpt['optimizer']) == {'generator', 'aux_diffusion'}
    assert ckpt['meta']['iter'] == 4 and 'param_schedulers' in ckpt
    assert len(ckpt['random_states']['ranks']) == 1
    gens = ckpt['random_states']['ranks'][0]['generators']
    assert any('degradation' in name for name in gens), sorted(gens)
    # The frozen SD weights stay out: the file is a few MB at most for the tiny model.
    assert osp.getsize(ckpt_path) < 5e6
    grids = [f for _, _, fs in os.walk(work) for f in fs if f.startswith('train_lq_sr_hq')]
    assert grids, 'no visualisation grid written'
    # The tiny config writes TensorBoard events too (scalars and the grids).
    events = [f for _, _, fs in os.walk(work) for f in fs if f.startswith('events.out.tfevents')]
    assert events, 'no TensorBoard event file written'

    log = _run(['tools/train.py', TINY, '--work-dir', str(work), '--resume'] + _short(6), env)
    assert 'resumed epoch: 0, iter: 4' in log
    assert osp.isfile(work / 'iter_6.pth')

    out = tmp_path / 'metrics.json'
    _run(['tools/test.py', TINY, str(work / 'iter_6.pth'), '--work-dir', str(work),
          '--out', str(out)], env)
    metrics = json.loads(out.read_text())
    assert set(metrics) >= {'Synthetic/PSNR', 'Synthetic/SSIM', 'Synthetic/NIQE'}
    assert 5 < metrics['Synthetic/PSNR'] < 60

    # Exported LoRA files get the mode every other file gets (umask), not mkstemp's 0600.
    exp = tmp_path / 'export'
    _run(['tools/export_lora.py', str(work / 'iter_6.pth'), '--config', TINY, '--out', str(exp)], env)
    umask = os.umask(0)
    os.umask(umask)
    written = sorted(os.listdir(exp))
    assert 'icmsr_lora.json' in written and 'unet_lora.safetensors' in written
    for name in written:
        if osp.isfile(exp / name):
            assert os.stat(exp / name).st_mode & 0o777 == 0o666 & ~umask, name
