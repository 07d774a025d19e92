"""The web app against the real running server (HTTP and ``gradio_client``, loopback only).

One app serves a tiny random export for the whole module, with ``--max-pixels 40000``
so that a 192x192 photo (a 768 px result: 4 + 121 + 4 tiles with 128 px UNet tiles) is
accepted and a 208x208 one is not.
"""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from webui_harness import load_webui, require_gradio, running_app, write_export, write_photo

MODEL = 'tiny_random'
LIMIT = 40000
STOPPED = re.compile(r'request stopped \((?P<reason>[a-z ]+)\): stop asked after (?P<asked>\d+) '
                     r'tile\(s\), work stopped after (?P<stopped>\d+) tile\(s\), (?P<secs>[\d.]+) s later')


@pytest.fixture(scope='module')
def app(tmp_path_factory):
    require_gradio()
    folder = tmp_path_factory.mktemp('webui')
    export = str(folder / MODEL)
    write_export(export)
    photos = dict(small=write_photo(str(folder / 'small.png'), 16, 16),
                  mid=write_photo(str(folder / 'mid.png'), 192, 192, seed=1),
                  large=write_photo(str(folder / 'large.png'), 208, 208, seed=2))
    with running_app(str(folder), ['--export', export, '--max-pixels', str(LIMIT)]) as running:
        running.export, running.photos = export, photos
        yield running


def _client(app):
    from gradio_client import Client
    return Client(app.url, verbose=False)


def _args(app, photo='small', **changes):
    from gradio_client import handle_file
    args = dict(paths=[handle_file(app.photos[photo])], name=MODEL, tile_size='512',
                color_fix='none', prompt='', seed=0)
    args.update(changes)
    return list(args.values())


def _upload(app, path, name):
    import httpx
    with open(path, 'rb') as f:
        response = httpx.post(app.url + 'gradio_api/upload', files={'files': (name, f)}, timeout=30)
    response.raise_for_status()
    [server_path] = response.json()
    return server_path


def _wait_for(app, pattern, timeout=120.0):
    """The first match of ``pattern`` in the app's log (bounded wait)."""
    end = time.time() + timeout
    while time.time() < end:
        match = pattern.search(app.log())
        if match:
            return match
        time.sleep(0.1)
    raise AssertionError(f'{pattern.pattern!r} not in the app log:\n{app.log()[-3000:]}')


def test_no_path_from_the_browser_is_loaded_as_code(app, tmp_path):
    """Issue 19.1: upload a .py through Gradio's upload route, then hand its server path to
    every slot of every endpoint the API accepts: nothing runs and every call is refused."""
    from gradio_client import handle_file
    marker = tmp_path / 'marker.txt'
    code = f"import os\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\n"
    evil = tmp_path / 'evil_config.py'
    evil.write_text(code)
    server_py = _upload(app, evil, 'evil_config.py')  # the reproduction: the route takes it
    assert server_py.endswith('evil_config.py') and os.path.isfile(server_py)
    server_png = _upload(app, evil, 'evil_config.png')  # the same code under an image name

    client = _client(app)
    api = client.view_api(print_info=False, return_format='dict')
    assert list(api['named_endpoints']) == ['/super_resolve'] and not api['unnamed_endpoints']
    params = [p['parameter_name'] for p in api['named_endpoints']['/super_resolve']['parameters']]
    assert params == ['paths', 'name', 'tile_size', 'color_fix', 'prompt', 'seed']

    def file_data(path, name):
        return {'path': path, 'orig_name': name, 'meta': {'_type': 'gradio.FileData'}}

    attempts = {
        'photos: the uploaded .py': dict(paths=[file_data(server_py, 'evil_config.py')]),
        'photos: the .py uploaded again': dict(paths=[handle_file(str(evil))]),
        'photos: the code named .png': dict(paths=[file_data(server_png, 'evil_config.png')]),
        'model': dict(name=server_py),
        'tile size': dict(tile_size=server_py),
        'colour fix': dict(color_fix=server_py),
    }
    refusals = {}
    for slot, change in attempts.items():
        with pytest.raises(Exception) as err:
            client.predict(*_args(app, **change), api_name='/super_resolve')
        refusals[slot] = str(err.value)
    assert 'Invalid file type' in refusals['photos: the .py uploaded again']
    assert 'evil_config.png' in refusals['photos: the code named .png']
    assert 'not in the list of choices' in refusals['model']
    # The old endpoint, which took config and checkpoint paths, is gone.
    with pytest.raises(Exception, match='run'):
        client.predict(server_py, server_py, server_py, api_name='/run')
    # The prompt is text for the text encoder: the path is not opened, the run is a normal one.
    result = client.predict(*_args(app, prompt=server_py), api_name='/super_resolve')
    assert '1 image(s) super-resolved' in result[3]
    assert not marker.exists(), f'the uploaded config ran in process {marker.read_text()}'


def test_a_photo_above_the_pixel_limit_is_refused_naming_the_limit(app):
    """Issue 19.2: the message names the photo, its size, the limit and how to raise it."""
    from gradio_client.exceptions import AppError
    client = _client(app)
    with pytest.raises(AppError) as err:
        client.predict(*_args(app, photo='large'), api_name='/super_resolve')
    message = str(err.value)
    assert 'large.png: the image is 208x208 = 43,264 pixels, above the limit of 40,000' in message
    assert '--max-pixels' in message and 'downscale' in message
    assert '/tmp' not in message  # the server's upload folder is not the user's business
    # A photo within the limit in the same run still comes back; the large one is listed.
    from gradio_client import handle_file
    result = client.predict(*_args(app, paths=[handle_file(app.photos['large']),
                                               handle_file(app.photos['small'])]),
                            api_name='/super_resolve')
    assert '1 image(s) super-resolved' in result[3] and 'could not use **large.png**' in result[3]


def test_the_default_limit_lets_a_12_megapixel_phone_photo_through():
    webui = load_webui()
    limit = webui.parse_args([]).max_pixels
    assert limit == webui.DEFAULT_MAX_PIXELS == 4096 * 3072
    for width, height in ((4000, 3000), (4032, 3024), (4080, 3072)):  # phones' 12 MP photos
        assert width * height <= limit
    assert webui.describe_limit(limit) == '12,582,912 pixels (12.6 MP, e.g. 4096x3072 at 4:3)'


def _wait_first_progress(job, timeout=300.0):
    end = time.time() + timeout
    while not job.status().progress_data:
        assert not job.done(), f'the job ended before its first tile: {job.status()}'
        assert time.time() < end, 'no progress update'
        time.sleep(0.02)


def _tiles_of_mid_request():
    """VAE encode 2x2 (768 px in 512 px tiles) + UNet 11x11 (128 px tiles) + VAE decode 2x2."""
    from icmsr.utils.tiling import tile_starts
    return 2 * len(tile_starts(768, 512, 64)) ** 2 + len(tile_starts(768, 128, 64)) ** 2


def test_cancel_stops_the_work_within_one_tile(app):
    """Issue 19.3: ``job.cancel()`` after the first progress update of a 129-tile request; the
    worker finishes at most the tile in flight, and the next request runs on a free worker."""
    client = _client(app)
    seen = len(STOPPED.findall(app.log()))
    job = client.submit(*_args(app, photo='mid', tile_size='128'), api_name='/super_resolve')
    _wait_first_progress(job)
    start = time.time()
    job.cancel()  # returns when the server's task has ended, i.e. the work has stopped
    freed = time.time() - start
    stops = list(STOPPED.finditer(app.log()))[seen:]
    assert len(stops) == 1, app.log()[-3000:]
    stop = stops[0]
    asked, stopped = int(stop['asked']), int(stop['stopped'])
    assert stop['reason'] == 'cancelled'
    assert stopped - asked <= 1, 'more than the tile in flight ran after the cancel'
    assert stopped < _tiles_of_mid_request()
    # The worker is free: a small request is served next, after the stop in the log.
    result = client.predict(*_args(app), api_name='/super_resolve')
    assert '1 image(s) super-resolved' in result[3]
    assert 'request done: 1 image(s), 3 tile(s)' in app.log()[stop.end():]
    print(f'\nworker free {freed:.2f} s after job.cancel(); stop asked after tile {asked}, '
          f'stopped after tile {stopped} of {_tiles_of_mid_request()}; stop took {stop["secs"]} s')


CLIENT = """
import sys, time
from gradio_client import Client, handle_file
job = Client(sys.argv[1], verbose=False).submit([handle_file(sys.argv[2])], sys.argv[3], '128',
                                                 'none', '', 0, api_name='/super_resolve')
while not job.status().progress_data and not job.done():
    time.sleep(0.02)
print('progress' if not job.done() else 'done', flush=True)
time.sleep(600)
"""


def test_a_client_that_goes_away_stops_its_work(app):
    """Issue 19.3: a client process killed mid-run (its connections drop, as when a page is
    closed): the work stops between tiles."""
    seen = len(STOPPED.findall(app.log()))
    client = subprocess.Popen([sys.executable, '-c', CLIENT, app.url, app.photos['mid'], MODEL],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == 'progress'
    finally:
        client.kill()
        client.wait(timeout=30)
    end = time.time() + 120
    while len(STOPPED.findall(app.log())) == seen:
        assert time.time() < end, app.log()[-3000:]
        time.sleep(0.1)
    stop = list(STOPPED.finditer(app.log()))[seen]
    assert stop['reason'] == 'page closed'
    assert int(stop['stopped']) - int(stop['asked']) <= 1
    assert int(stop['stopped']) < _tiles_of_mid_request()


def _page_config(app):
    import httpx
    config = httpx.get(app.url + 'config', timeout=30).json()
    return {c['props'].get('elem_id'): c for c in config['components'] if c['props'].get('elem_id')}, \
        config['components']


def test_the_page_says_what_it_does_and_uses_the_models_defaults(app):
    """Issue 19.4: x4, accepted sizes, a cancel button, no path fields; the model's defaults shown
    and used: the app's result equals the front door's with the model's defaults (as the CLI)."""
    by_id, components = _page_config(app)
    intro = by_id['intro']['props']['value']
    assert 'x4' in intro and '40,000 pixels' in intro and 'Cancel' in intro
    assert by_id['cancel']['props']['value'] == 'Cancel'
    assert [c['props'].get('label') for c in components if c['type'] == 'textbox'] == ['Prompt']
    assert by_id['model']['props']['choices'] == [[MODEL, MODEL]]
    from icmsr.apis import init_model, super_resolve_image
    model = init_model(None, app.export, device='cpu')
    assert by_id['colorfix']['props']['value'] == model.color_fix == 'none'
    assert f"default: {model.color_fix}" in by_id['colorfix']['props']['label']
    assert by_id['tile']['props']['value'] == str(model.tiles.tile_size)
    about = by_id['about']['props']['value']
    assert f'colour fix `{model.color_fix}`' in about and f'UNet tiles {model.tiles.tile_size} px' in about
    result = _client(app).predict(*_args(app, tile_size=by_id['tile']['props']['value'],
                                         color_fix=by_id['colorfix']['props']['value']),
                                  api_name='/super_resolve')
    [download] = result[2]
    expected = super_resolve_image(model, app.photos['small'])  # tools/infer.py's call
    assert np.array_equal(np.asarray(Image.open(download)), expected)


def test_the_demo_model_is_named_as_such_and_bad_model_arguments_get_one_line(tmp_path, monkeypatch):
    require_gradio()
    webui = load_webui()
    models = webui.ServedModels
    import webui_models
    monkeypatch.setattr(webui_models, 'DEMO_WEIGHTS', str(tmp_path / 'absent' / 'iter_200.pth'))
    with pytest.raises(webui.ModelChoiceError, match=r'run `bash tools/demo.sh`'):
        models.from_args()
    with pytest.raises(webui.ModelChoiceError, match='no icmsr_lora.json in it'):
        models.from_args(exports=[str(tmp_path)])
    with pytest.raises(webui.ModelChoiceError, match='give the config it was trained with'):
        (tmp_path / 'x.pth').write_bytes(b'')
        models.from_args(weights=str(tmp_path / 'x.pth'))
    export = str(tmp_path / 'a' / 'same')
    write_export(export)
    os.makedirs(tmp_path / 'b' / 'same')
    os.link(os.path.join(export, 'icmsr_lora.json'), tmp_path / 'b' / 'same' / 'icmsr_lora.json')
    with pytest.raises(webui.ModelChoiceError, match="two models are named 'same'"):
        models.from_args(exports=[export], models_dir=str(tmp_path / 'b'))
    demo = models({webui_models.DEMO_NAME: (None, export)}, 'cpu', demo=webui_models.DEMO_NAME)
    text = demo.describe(webui_models.DEMO_NAME)
    assert 'tiny demo model' in text and 'does **not** give real-photo quality' in text
    assert 'tiny demo' not in models.from_args(exports=[export], device='cpu').describe('same')


def test_a_bad_start_prints_one_error_line_and_exits_2(tmp_path, capsys):
    require_gradio()
    webui = load_webui()
    for argv, expected in ((['--export', str(tmp_path)], f'error: {tmp_path}: no icmsr_lora.json in it'),
                           (['--max-pixels', '0'], 'error: --max-pixels 0: give a positive number')):
        assert webui.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(expected) and err.count('\n') == 1 and 'Traceback' not in err
