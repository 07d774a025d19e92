"""Web app: super-resolve photos in the browser.

    pip install -r requirements/webui.txt
    python tools/webui.py [--config CFG --weights CKPT | --export DIR] [--port 7860]

Upload one or several photos, pick the model (a config + checkpoint, or an export
folder; the tiny demo checkpoint of ``bash tools/demo.sh`` when nothing is given),
the tile size, colour fix, prompt and seed, and get a before/after comparison and
the results to download. Every request runs ``OneStepSR.super_resolve``, the
toolkit's one super-resolution path, with the tile counter shown live. Requests
are queued and run one at a time (one model in memory, no two users colliding).
The app listens on 127.0.0.1 unless ``--host`` says otherwise.
"""
import argparse
import dataclasses
import os
import os.path as osp
import sys
import tempfile
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from icmsr.apis import image_to_tensor, init_model, save_image, super_resolve_image  # noqa: E402
from icmsr.apis.image_sr import to_uint8  # noqa: E402
from icmsr.apis.lora_export import META_FILE  # noqa: E402
from icmsr.models.one_step_sr import resize_to  # noqa: E402
from icmsr.utils.color_correction import COLOR_FIX_MODES  # noqa: E402

DEMO_CONFIG = osp.join(ROOT, 'configs', 'icmsr_tiny_base.py')
DEMO_WEIGHTS = osp.join(ROOT, 'work_dirs', 'icmsr_tiny_base', 'iter_200.pth')
TILE_SIZES = (128, 256, 384, 512, 768, 1024)


class ModelChoiceError(ValueError):
    """The model asked for in the form cannot be used (the message says why and what to do)."""


def choose_model(config: str = '', weights: str = '', export: str = '') -> Tuple[Optional[str], str]:
    """Turn the form's model fields into ``init_model`` arguments.

    Args:
        config: config file (with ``weights``).
        weights: ``.pth`` checkpoint (or an export folder).
        export: export folder (takes precedence; no config needed).

    Returns:
        ``(config or None, weights)``.

    Raises:
        ModelChoiceError: with a message naming the missing file and what to do.
    """
    config, weights, export = (s.strip() for s in (config or '', weights or '', export or ''))
    if export:
        if not osp.isfile(osp.join(export, META_FILE)):
            raise ModelChoiceError(f'Export folder {export!r} has no {META_FILE}: give a folder '
                                   'written by tools/export_lora.py.')
        return None, export
    if weights:
        if not osp.exists(weights):
            raise ModelChoiceError(f'Checkpoint {weights!r} does not exist.')
        if osp.isdir(weights):
            return choose_model(export=weights)
        if not config:
            raise ModelChoiceError(f'Checkpoint {weights!r} needs the config it was trained with.')
        if not osp.isfile(config):
            raise ModelChoiceError(f'Config {config!r} does not exist.')
        return config, weights
    if config:
        raise ModelChoiceError(f'Config {config!r} needs a checkpoint (trained weights).')
    if not osp.isfile(DEMO_WEIGHTS):
        raise ModelChoiceError(
            f'No model chosen and the demo checkpoint {osp.relpath(DEMO_WEIGHTS, ROOT)} is absent. '
            'Run `bash tools/demo.sh` (trains the tiny demo model on the CPU), or give a config and '
            'a checkpoint, or an export folder.')
    return DEMO_CONFIG, DEMO_WEIGHTS


class ModelCache:
    """Keeps the last model built (requests run one at a time, so one is enough)."""

    def __init__(self, device: Optional[str] = None) -> None:
        self.device = device
        self.key: Optional[Tuple[Optional[str], str]] = None
        self.model: Any = None
        self.lock = threading.Lock()

    def get(self, config: Optional[str], weights: str) -> Any:
        """The model of ``(config, weights)``, built on first use."""
        with self.lock:
            if self.key != (config, weights):
                self.model = None  # free the old one first
                self.model = init_model(config, weights, device=self.device)
                self.key = (config, weights)
            return self.model


def before_image(lq: torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """The LQ upscaled (bicubic) to the result's size: the 'before' of the comparison."""
    return to_uint8(resize_to(lq, size))


def super_resolve_files(model: Any, paths: Sequence[str], tile_size: int, color_fix: str,
                        prompt: str, seed: Optional[int], out_dir: str,
                        progress: Any = None) -> Dict[str, Any]:
    """Super-resolve uploaded files; unreadable ones are reported, not fatal.

    Args:
        model: The inference model (``OneStepSR``).
        paths: Uploaded image files.
        tile_size: UNet tile in output pixels.
        color_fix: One of ``COLOR_FIX_MODES``.
        prompt: Text prompt.
        seed: Seed set before each image (None: not set).
        out_dir: Folder the results are written to (PNG).
        progress: ``progress(fraction, desc)`` callable (Gradio's progress tracker).

    Returns:
        ``pairs`` [(before, after)], ``files`` (written PNGs), ``failed`` [(name, reason)], ``summary``.
    """
    tiles = dataclasses.replace(model.tiles, tile_size=int(tile_size),
                                tile_overlap=min(model.tiles.tile_overlap, int(tile_size) // 2))
    pairs, files, failed = [], [], []
    for index, path in enumerate(paths):
        name = osp.basename(path)
        try:
            lq = image_to_tensor(path)
        except Exception as err:  # any reader error: say which file and why, go on
            failed.append((name, f'{type(err).__name__}: {err}'))
            continue

        def report(stage: str, done: int, total: int, index: int = index, name: str = name) -> None:
            if progress is not None:
                progress((index * 3 + ('encode', 'denoise', 'decode').index(stage) + done / total)
                         / (3 * len(paths)), desc=f'{name}: {stage} tile {done}/{total}')

        after = super_resolve_image(model, path, prompt=prompt or '', tiles=tiles, color_fix=color_fix,
                                    seed=None if seed is None else int(seed), progress=report)
        target = osp.join(out_dir, f'{osp.splitext(name)[0]}_x{model.scale}.png')
        save_image(after, target)
        pairs.append((before_image(lq, after.shape[:2]), after))
        files.append(target)
    lines = [f'{len(files)} image(s) super-resolved (x{model.scale}, tiles of {tiles.tile_size} px, '
             f'colour fix {color_fix}).']
    lines += [f'- could not read **{name}**: {reason}' for name, reason in failed]
    return dict(pairs=pairs, files=files, failed=failed, summary='\n'.join(lines))


def build_app(cache: ModelCache, defaults: Dict[str, str]) -> Any:
    """The Gradio app.

    Args:
        cache: Model cache shared by all requests.
        defaults: initial ``config``, ``weights``, ``export`` fields.

    Returns:
        A ``gradio.Blocks`` (queued, one request at a time).
    """
    import gradio as gr

    def run(paths, config, weights, export, tile_size, color_fix, prompt, seed,
            progress=gr.Progress()):
        if not paths:
            raise gr.Error('Upload at least one photo.')
        try:
            model = cache.get(*choose_model(config, weights, export))
        except ModelChoiceError as err:
            raise gr.Error(str(err))
        except (OSError, KeyError, ValueError, RuntimeError) as err:  # the model could not be built
            raise gr.Error(f'Could not load the model: {type(err).__name__}: {err}')
        result = super_resolve_files(model, [getattr(p, 'name', p) for p in paths], int(tile_size),
                                     color_fix, prompt, None if seed is None else int(seed),
                                     tempfile.mkdtemp(prefix='icmsr_webui_'), progress)
        if not result['pairs']:
            raise gr.Error('None of the files could be read as an image:\n' + '\n'.join(
                f'{name}: {reason}' for name, reason in result['failed']))
        for name, reason in result['failed']:
            gr.Warning(f'Could not read {name}: {reason}')
        return (result['pairs'][0], [after for _, after in result['pairs']], result['files'],
                result['summary'], result['pairs'])

    def show(pairs, evt: gr.SelectData):
        return pairs[evt.index]

    with gr.Blocks(title='ICM-SR super-resolution') as app:
        gr.Markdown('# One-step diffusion super-resolution\nUpload photos, choose the model and '
                    'settings, press **Super-resolve**.')
        with gr.Row():
            with gr.Column(scale=1):
                uploads = gr.File(label='Photos', file_count='multiple', file_types=['image'],
                                  elem_id='uploads')
                with gr.Accordion('Model (empty: the demo checkpoint)', open=False):
                    config = gr.Textbox(label='Config', value=defaults.get('config', ''))
                    weights = gr.Textbox(label='Checkpoint', value=defaults.get('weights', ''))
                    export = gr.Textbox(label='Export folder (instead of config + checkpoint)',
                                        value=defaults.get('export', ''))
                tile_size = gr.Dropdown(label='Tile size (output pixels)', choices=list(TILE_SIZES),
                                        value=512)
                color_fix = gr.Radio(label='Colour fix', choices=list(COLOR_FIX_MODES), value='wavelet')
                prompt = gr.Textbox(label='Prompt', value='')
                seed = gr.Number(label='Seed', value=0, precision=0)
                button = gr.Button('Super-resolve', variant='primary', elem_id='run')
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label='Before / after', type='numpy', format='png',
                                        elem_id='compare')
                gallery = gr.Gallery(label='Results (click to compare)', columns=4, format='png',
                                     elem_id='gallery')
                downloads = gr.File(label='Download', file_count='multiple', elem_id='downloads')
                status = gr.Markdown(elem_id='status')
        pairs = gr.State([])
        button.click(run, [uploads, config, weights, export, tile_size, color_fix, prompt, seed],
                     [slider, gallery, downloads, status, pairs])
        gallery.select(show, pairs, slider)
    return app.queue(default_concurrency_limit=1)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='', help='config file (with --weights)')
    parser.add_argument('--weights', default='', help='checkpoint .pth (with --config)')
    parser.add_argument('--export', default='', help='export folder (tools/export_lora.py)')
    parser.add_argument('--device', default=None, help='cuda / cpu (default: CUDA if available)')
    parser.add_argument('--host', default='127.0.0.1', help='address to listen on (default: loopback)')
    parser.add_argument('--port', type=int, default=7860)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Start the app and serve until interrupted."""
    args = parse_args(argv)
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no calls home
    try:
        import gradio as gr
    except ImportError:
        print('The web app needs Gradio: pip install -r requirements/webui.txt', file=sys.stderr)
        return 1
    app = build_app(ModelCache(args.device),
                    dict(config=args.config, weights=args.weights, export=args.export))
    # System fonts: the default theme would fetch web fonts, and the app must work offline.
    theme = gr.themes.Default(font=['sans-serif'], font_mono=['monospace'])
    app.launch(server_name=args.host, server_port=args.port, ssr_mode=False, theme=theme,
               footer_links=[], show_error=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
