"""The web app end to end in a real headless browser: upload a RealSR photo, run, get the x4 result.

Needs Debian's ``chromium`` + ``chromium-driver`` and ``pip install -r requirements/webui.txt``
(``.ci/run`` installs them); skipped with the reason otherwise. Set
``ICMSR_WRITE_SCREENSHOT=1`` to refresh ``docs/images/webui.png`` from the run.
"""
import base64
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from realsr_data import realsr_root
from tiny_config import ROOT, tiny_model_cfg

LQ = os.path.join(realsr_root(), 'test_LR', 'Canon_001_LR4.png')
SCREENSHOT = os.path.join(ROOT, 'docs', 'images', 'webui.png')


def _requirements():
    missing = [name for name in ('chromium', 'chromedriver') if shutil.which(name) is None]
    if missing:
        pytest.skip(f'{missing} not installed: apt-get install -y chromium chromium-driver')
    for module in ('selenium', 'gradio'):
        pytest.importorskip(module, reason='pip install -r requirements/webui.txt')
    if not os.path.isfile(LQ):
        pytest.skip(f'RealSR LQ image {LQ} not found (set ICMSR_REALSR_ROOT)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f'the app exited with {proc.returncode}:\n{open(log).read()[-3000:]}')
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f'{url} did not answer in {timeout} s')


def _write_export(out: str) -> None:
    """A tiny random-weight export (its base rebuilds from base_seed in the app's process)."""
    from icmsr.apis import export_model, init_model
    from icmsr.models import OneStepSR
    cfg = tiny_model_cfg(generator=dict(lora_rank=4, timestep=999, train_conv_in=True))
    model = init_model(cfg, None, fuse=False, allow_untrained=True)
    with torch.no_grad():
        for p in model.generator.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    export_model(model, out, OneStepSR.inference_config(cfg))


@pytest.fixture
def app_url(tmp_path):
    _requirements()
    port, export_dir = _free_port(), str(tmp_path / 'export')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', GRADIO_ANALYTICS_ENABLED='False')
    # The app reads the export at the first request: write it while the app starts.
    log = str(tmp_path / 'app.log')
    with open(log, 'w') as out:
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'tools', 'webui.py'), '--export',
                                 export_dir, '--host', '127.0.0.1', '--port', str(port), '--device',
                                 'cpu'], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _write_export(export_dir)
        url = f'http://127.0.0.1:{port}/'
        _wait_http(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which('chromium')
    for flag in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                 '--window-size=1280,900'):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which('chromedriver')), options=options)


def _image_size(driver, img) -> tuple:
    """Natural size of an <img>, after it has loaded."""
    return tuple(driver.execute_script(
        'return arguments[0].complete ? [arguments[0].naturalWidth, arguments[0].naturalHeight] : [0, 0];',
        img))


def test_upload_run_and_get_the_x4_result(app_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    lq_w, lq_h = Image.open(LQ).size
    driver = _browser()
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 45)
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '#uploads input[type=file]')))
        upload.send_keys(LQ)
        wait.until(EC.text_to_be_present_in_element((By.ID, 'uploads'), 'Canon_001_LR4'))
        driver.find_element(By.ID, 'run').click()
        wait.until(EC.text_to_be_present_in_element((By.ID, 'status'), '1 image(s) super-resolved'))
        result = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '#gallery img')))
        wait.until(lambda d: _image_size(d, result)[0] > 0)
        assert _image_size(driver, result) == (lq_w * 4, lq_h * 4)
        # The comparison shows the upscaled LQ and the result, both at the result's size.
        compare = driver.find_elements(By.CSS_SELECTOR, '#compare img')
        assert len(compare) == 2 and all(_image_size(driver, im) == (lq_w * 4, lq_h * 4) for im in compare)
        links = driver.find_elements(By.CSS_SELECTOR, '#downloads a')
        assert any('Canon_001_LR4_x4.png' in (a.get_attribute('href') or '') for a in links)
        shot = Image.open(io.BytesIO(base64.b64decode(driver.get_screenshot_as_base64())))
    finally:
        driver.quit()
    out = str(tmp_path / 'webui.png')
    shot.convert('RGB').quantize(colors=128).save(out, optimize=True)
    assert os.path.getsize(out) < 300_000
    if os.environ.get('ICMSR_WRITE_SCREENSHOT') == '1':
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        shutil.copyfile(out, SCREENSHOT)


def _webui():
    spec = importlib.util.spec_from_file_location('webui', os.path.join(ROOT, 'tools', 'webui.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_choice_and_unreadable_files_are_explained(tmp_path, monkeypatch):
    """Without a browser: the messages the page shows."""
    webui = _webui()
    monkeypatch.setattr(webui, 'DEMO_WEIGHTS', str(tmp_path / 'absent' / 'iter_200.pth'))
    with pytest.raises(webui.ModelChoiceError, match=r'Run `bash tools/demo.sh`'):
        webui.choose_model()
    with pytest.raises(webui.ModelChoiceError, match='has no icmsr_lora.json'):
        webui.choose_model(export=str(tmp_path))
    with pytest.raises(webui.ModelChoiceError, match='needs the config it was trained with'):
        (tmp_path / 'x.pth').write_bytes(b'')
        webui.choose_model(weights=str(tmp_path / 'x.pth'))
    export_dir = str(tmp_path / 'export')
    _write_export(export_dir)
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not an image')
    good = tmp_path / 'good.png'
    Image.fromarray((np.random.default_rng(0).random((8, 12, 3)) * 255).astype(np.uint8)).save(good)
    calls = []
    model = webui.ModelCache('cpu').get(*webui.choose_model(export=export_dir))
    result = webui.super_resolve_files(model, [str(broken), str(good)], 512, 'none', '', 0,
                                       str(tmp_path / 'out'), lambda *a, **k: calls.append(a))
    assert [name for name, _ in result['failed']] == ['broken.png']
    assert 'could not read **broken.png**' in result['summary']
    assert result['files'] == [str(tmp_path / 'out' / 'good_x4.png')]
    before, after = result['pairs'][0]
    assert before.shape == after.shape == (32, 48, 3)
    assert Image.open(result['files'][0]).size == (48, 32)
    # The good file is the second of two: its tiles fill the second half of the bar.
    assert calls[0][0] > 0.5 and calls[-1][0] == pytest.approx(1.0)
