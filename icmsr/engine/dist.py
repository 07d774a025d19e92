"""Start the process group for ``tools/train.py``/``tools/test.py`` on GPU and CPU machines.

MMEngine's own start-up (``init_dist``, called by the Runner) pins every process
to ``cuda:LOCAL_RANK`` first, so ``torchrun ... --launcher pytorch`` fails on a
machine without CUDA. The tools call :func:`init_process_group_for` before they
build the Runner; the Runner then finds the group initialised and skips its own
start-up. The backend is the config's ``env_cfg.dist_cfg.backend`` (NCCL by
default) when CUDA is present and gloo when it is not, so the same command line
trains on a GPU node and on a laptop. Without CUDA the model wrapper is also told
to keep the model on the CPU (MMEngine passes ``device_ids=[LOCAL_RANK]`` to its
DDP wrappers, which DDP refuses for CPU modules).
"""
import datetime
import os
import subprocess
from typing import Any, Dict, Mapping, MutableMapping, Optional

import torch
import torch.distributed as torch_dist

#: Environment variables ``torchrun`` sets for every process.
TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def choose_backend(requested: Optional[str], cuda_available: bool) -> str:
    """Pick the collective backend for this machine.

    Args:
        requested: The config's ``env_cfg.dist_cfg.backend`` (None: NCCL).
        cuda_available: Whether this process can use CUDA.

    Returns:
        ``requested`` (default ``'nccl'``) with CUDA, ``'gloo'`` without: NCCL and
        the other GPU backends need a GPU, gloo runs on any CPU.
    """
    if not cuda_available:
        return 'gloo'
    return requested or 'nccl'


def slurm_env(environ: Mapping[str, str], port: Optional[int] = None) -> Dict[str, str]:
    """Translate a Slurm task's variables into the ``torchrun`` ones.

    Args:
        environ: The process environment (``SLURM_PROCID``, ``SLURM_NTASKS``,
            ``SLURM_NODELIST``, ``SLURM_LOCALID``; ``MASTER_PORT`` when set).
        port: Master port (default: ``MASTER_PORT`` or 29500).

    Returns:
        ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.

    Raises:
        KeyError: When a Slurm variable is missing (the process was not started
            by ``srun``).
    """
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST') if k not in environ]
    if missing:
        raise KeyError(f'--launcher slurm: {missing} not set; start the job with srun '
                       f'(see tools/slurm_train.sh).')
    addr = environ.get('MASTER_ADDR')
    if not addr:
        # The first host of the allocation hosts rank 0.
        addr = subprocess.getoutput(
            f'scontrol show hostname {environ["SLURM_NODELIST"]} | head -n1').strip()
    return dict(RANK=environ['SLURM_PROCID'], WORLD_SIZE=environ['SLURM_NTASKS'],
                LOCAL_RANK=environ.get('SLURM_LOCALID', '0'), MASTER_ADDR=addr,
                MASTER_PORT=str(port or environ.get('MASTER_PORT', 29500)))


def keep_wrapper_on_cpu(cfg: MutableMapping[str, Any]) -> None:
    """Make the Runner's DDP wrapper take a CPU model (``device_ids=None``).

    Args:
        cfg: The config; ``model_wrapper_cfg`` is created when absent, with
            MMEngine's defaults for the plain wrapper.
    """
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                       find_unused_parameters=cfg.get('find_unused_parameters', False))
    # An explicit key wins over the Runner's default_args.
    wrapper['device_ids'] = None
    cfg['model_wrapper_cfg'] = wrapper


def init_process_group_for(launcher: str, cfg: Optional[MutableMapping[str, Any]] = None) -> bool:
    """Initialise ``torch.distributed`` for ``--launcher`` before the Runner is built.

    With CUDA the process is pinned to ``cuda:LOCAL_RANK`` and the config's backend
    (NCCL by default) is used, exactly as MMEngine would; without CUDA the group
    uses gloo, nothing touches CUDA and ``cfg`` gets a CPU model wrapper
    (:func:`keep_wrapper_on_cpu`).

    Args:
        launcher: ``'none'``, ``'pytorch'`` (torchrun) or ``'slurm'`` (srun).
        cfg: The loaded config; ``env_cfg.dist_cfg`` gives ``backend`` and
            ``timeout`` (seconds), as for MMEngine.

    Returns:
        True when this call initialised the group; False for ``'none'`` or when a
        group already exists.

    Raises:
        ValueError: For an unknown launcher.
        KeyError: When the launcher's environment variables are missing.
    """
    if launcher == 'none' or (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(f"--launcher must be 'none', 'pytorch' or 'slurm', got {launcher!r}")
    if launcher == 'slurm':
        os.environ.update(slurm_env(os.environ))
    missing = [k for k in TORCHRUN_VARS if k not in os.environ]
    if missing:
        raise KeyError(f'--launcher {launcher}: environment variables {missing} are not set; '
                       f'start the script with torchrun (tools/dist_train.sh) or srun.')
    dist_cfg = dict(((cfg or {}).get('env_cfg') or {}).get('dist_cfg') or {})
    cuda = torch.cuda.is_available()
    backend = choose_backend(dist_cfg.pop('backend', None), cuda)
    kwargs: Dict[str, Any] = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=float(dist_cfg['timeout']))
    if cuda:
        torch.cuda.set_device(int(os.environ['LOCAL_RANK']))
    elif cfg is not None:
        keep_wrapper_on_cpu(cfg)
    torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    return True
