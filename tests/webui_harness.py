"""Start the real web app (``tools/webui.py``) on 127.0.0.1 for the web tests, with a tiny export."""
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator, List

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_config import ROOT, tiny_model_cfg

WEBUI = os.path.join(ROOT, 'tools', 'webui.py')


def require_gradio() -> None:
    """Skip (with the install line) when the web app's packages are absent."""
    for module in ('gradio', 'gradio_client'):
        pytest.importorskip(module, reason='pip install -r requirements/webui.txt')


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def write_export(out: str) -> None:
    """A tiny random-weight export (its base rebuilds from base_seed in the app's process)."""
    from icmsr.apis import export_model, init_model
    from icmsr.models import OneStepSR
    cfg = tiny_model_cfg(generator=dict(lora_rank=4, timestep=999, train_conv_in=True))
    model = init_model(cfg, None, fuse=False, allow_untrained=True)
    with torch.no_grad():
        for p in model.generator.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    export_model(model, out, OneStepSR.inference_config(cfg))


def write_photo(path: str, height: int, width: int, seed: int = 0) -> str:
    """A random RGB PNG of ``height`` x ``width``."""
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(path)
    return path


def load_webui():
    """``tools/webui.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location('webui', WEBUI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RunningApp:
    """A started app: its URL, its process and its log (stdout and stderr)."""

    def __init__(self, url: str, proc: subprocess.Popen, log: str) -> None:
        self.url, self.proc, self.log_path = url, proc, log

    def log(self) -> str:
        """Everything the app printed so far."""
        with open(self.log_path) as f:
            return f.read()


def _wait_http(url: str, proc: subprocess.Popen, log: str, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f'the app exited with {proc.returncode}:\n{open(log).read()[-3000:]}')
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f'{url} did not answer in {timeout} s:\n{open(log).read()[-3000:]}')


@contextlib.contextmanager
def running_app(folder: str, args: List[str], timeout: float = 180) -> Iterator[RunningApp]:
    """Start ``tools/webui.py ARGS`` on a free loopback port; stop it on exit.

    Args:
        folder: Where its log goes.
        args: Model and limit arguments (host, port and device are added).
        timeout: Seconds to wait for the page to answer.
    """
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', GRADIO_ANALYTICS_ENABLED='False',
               PYTHONUNBUFFERED='1')
    log = os.path.join(folder, 'app.log')
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, WEBUI, *args, '--host', '127.0.0.1', '--port',
                                 str(port), '--device', 'cpu'], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        url = f'http://127.0.0.1:{port}/'
        _wait_http(url, proc, log, timeout)
        yield RunningApp(url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
