"""Write the tiny base folder: diffusers layout, README with provenance and sha256 of every file.

Used by ``tools/pretrain_tiny_base.py``.
"""
import os
import os.path as osp
import shutil
import tempfile
from typing import Any, Dict

import torch
from tiny_base_photos import HELD_OUT_IMAGE

from icmsr.fileio.digest import file_sha256

SUBFOLDERS = ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler', 'adapter_color',
              'adapter_canny')


def write_readme(folder: str, command: str, seed: int, steps: Dict[str, int],
                 metrics: Dict[str, float]) -> None:
    """Write ``README.md``: provenance, held-out figures and the sha256 of every file."""
    files = sorted(osp.relpath(osp.join(d, f), folder) for d, _, fs in os.walk(folder)
                   for f in fs if f != 'README.md')
    lines = [
        '# Tiny pretrained base of configs/icmsr_tiny.py', '',
        'A tiny SD-like stack (UNet, VAE, text encoder, tokenizer, DDPM scheduler, colormap and',
        'Canny T2I adapters) pretrained for a few minutes on the sample photos that ship with',
        'scikit-image. It gives the CPU demo and the tests a base that knows images; it is not a',
        'real Stable Diffusion and not a super-resolution model.', '',
        'Produced (one CPU thread, deterministic algorithms) by:', '',
        f'    {command}', '',
        f'seed {seed}; steps: VAE {steps["vae"]}, UNet {steps["unet"]}, each adapter '
        f'{steps["adapter"]}. Regenerate into another folder and compare the hashes below.', '',
        f'Held-out figures (photo `{HELD_OUT_IMAGE}`, never trained on): `vae_psnr`, the VAE\'s',
        'reconstruction PSNR (dB, 128 px); `denoise_loss`, the UNet\'s epsilon MSE over all',
        'timesteps; `x0_mse_*`, the MSE of its one-step clean-latent estimate at t in [600, 900)',
        'with the empty prompt alone and with each adapter\'s condition.', '',
        '| figure | value |', '|---|---|']
    lines += [f'| {k} | {v:.4f} |' for k, v in metrics.items()]
    lines += ['', 'The VAE\'s `scaling_factor` is 1 / std of its latents (measured after training, as',
              'SD\'s was), not the 0.18215 of the architecture dict. The UNet is stored in float16',
              '(sharded, < 1 MB per file) and loads as float32; the other parts are float32.', '',
              '| file | sha256 |', '|---|---|']
    lines += [f'| `{f}` | `{file_sha256(osp.join(folder, f))}` |' for f in files]
    with open(osp.join(folder, 'README.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def save_base(stack: Dict[str, Any], out_dir: str, command: str, seed: int,
              steps: Dict[str, int], metrics: Dict[str, float]) -> None:
    """Write the diffusers-layout folder atomically (temp folder, then rename into place).

    Args:
        stack: trained components.
        out_dir: target folder (replaced if it exists).
        command: the command line recorded in the README.
        seed: the seed recorded in the README.
        steps: the step counts recorded in the README.
        metrics: held-out figures recorded in the README.
    """
    out_dir = osp.abspath(out_dir)
    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.tiny_base-', dir=parent)
    try:
        unet16 = torch.nn.Module.to(stack['unet'], dtype=torch.float16)
        unet16.save_pretrained(osp.join(tmp, 'unet'), max_shard_size='1MB')
        torch.nn.Module.to(stack['unet'], dtype=torch.float32)
        for name in SUBFOLDERS[1:]:
            stack[name].save_pretrained(osp.join(tmp, name))
        write_readme(tmp, command, seed, steps, metrics)
        for d, _, fs in os.walk(tmp):
            for f in fs:
                os.chmod(osp.join(d, f), 0o644)
        os.chmod(tmp, 0o755)
        old = None
        if osp.exists(out_dir):
            old = tmp + '.old'
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
