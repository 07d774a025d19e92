"""The web app end to end in a real headless browser: upload a RealSR photo, run, get the x4 result.

Needs Debian's ``chromium`` + ``chromium-driver`` and ``pip install -r requirements/webui.txt``
(``.ci/run`` installs them); skipped with the reason otherwise. Set
``ICMSR_WRITE_SCREENSHOT=1`` to refresh ``docs/images/webui.png`` from the run.
"""
import base64
import io
import os
import re
import shutil

import pytest
from PIL import Image

from realsr_data import realsr_root
from tiny_config import ROOT
from test_webui_app import STOPPED
from webui_harness import running_app, write_export, write_photo

LQ = os.path.join(realsr_root(), 'test_LR', 'Canon_001_LR4.png')
SCREENSHOT = os.path.join(ROOT, 'docs', 'images', 'webui.png')
PROGRESS = re.compile(r'(encode|denoise|decode) tile \d+/\d+')


def _requirements():
    missing = [name for name in ('chromium', 'chromedriver') if shutil.which(name) is None]
    if missing:
        pytest.skip(f'{missing} not installed: apt-get install -y chromium chromium-driver')
    for module in ('selenium', 'gradio'):
        pytest.importorskip(module, reason='pip install -r requirements/webui.txt')
    if not os.path.isfile(LQ):
        pytest.skip(f'RealSR LQ image {LQ} not found (set ICMSR_REALSR_ROOT)')


@pytest.fixture(scope='module')
def app(tmp_path_factory):
    _requirements()
    folder = tmp_path_factory.mktemp('webui_browser')
    export_dir = str(folder / 'tiny_random')
    write_export(export_dir)  # the app builds its models before it listens
    with running_app(str(folder), ['--export', export_dir]) as running:
        yield running


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


def test_the_cancel_button_stops_the_run_within_one_tile(app, tmp_path):
    """A 192x192 photo (12 tiles of the model's 512 px tiling); Cancel at its first progress."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    photo = write_photo(str(tmp_path / 'mid.png'), 192, 192)
    seen = len(STOPPED.findall(app.log()))
    driver = _browser()
    try:
        driver.get(app.url)
        wait = WebDriverWait(driver, 45)
        wait.until(EC.text_to_be_present_in_element((By.ID, 'intro'), 'x4'))  # the page is up
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '#uploads input[type=file]')))
        upload.send_keys(photo)
        wait.until(EC.text_to_be_present_in_element((By.ID, 'uploads'), 'KB'))
        driver.find_element(By.ID, 'run').click()
        WebDriverWait(driver, 120, poll_frequency=0.05).until(
            lambda d: PROGRESS.search(d.find_element(By.TAG_NAME, 'body').text))  # the progress bar
        driver.find_element(By.ID, 'cancel').click()
        WebDriverWait(driver, 120).until(lambda d: len(STOPPED.findall(app.log())) > seen)
    finally:
        driver.quit()
    stop = list(STOPPED.finditer(app.log()))[seen]
    assert stop['reason'] == 'cancelled'
    assert int(stop['stopped']) - int(stop['asked']) <= 1 and int(stop['stopped']) < 12


def test_upload_run_and_get_the_x4_result(app, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    lq_w, lq_h = Image.open(LQ).size
    driver = _browser()
    try:
        driver.get(app.url)
        wait = WebDriverWait(driver, 45)
        # The page says what it does and offers a way to stop a run.
        intro = wait.until(EC.presence_of_element_located((By.ID, 'intro'))).text
        assert 'x4' in intro and '12,582,912 pixels' in intro
        assert driver.find_element(By.ID, 'cancel').text == 'Cancel'
        assert driver.find_element(By.CSS_SELECTOR, '#model input').get_attribute('value') == 'tiny_random'
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
        driver.execute_script('window.scrollTo(0, 0)')
        shot = Image.open(io.BytesIO(base64.b64decode(driver.get_screenshot_as_base64())))
    finally:
        driver.quit()
    out = str(tmp_path / 'webui.png')
    shot.convert('RGB').quantize(colors=128).save(out, optimize=True)
    assert os.path.getsize(out) < 300_000
    if os.environ.get('ICMSR_WRITE_SCREENSHOT') == '1':
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        shutil.copyfile(out, SCREENSHOT)
