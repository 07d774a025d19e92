"""Web app: super-resolve photos in the browser with the models this server was started with.

    pip install -r requirements/webui.txt
    python tools/webui.py --export exports/icmsr_multi [--export DIR ...] [--models-dir DIR]
    python tools/webui.py --config CFG --weights CKPT
    python tools/webui.py                      # the tiny demo model of `bash tools/demo.sh`

The page offers the served models by name: nothing a browser sends is ever used as a
path to a config, checkpoint or export (a config is Python and would run in the
server). Every photo goes through :func:`icmsr.apis.super_resolve_image`, the
toolkit's one front door of inference, with the model's own tile and colour-fix
defaults, as ``tools/infer.py`` does. Photos above ``--max-pixels`` are refused with
a message naming the limit. Requests are queued and run one at a time; Cancel, or
closing the page, stops the work after the tile in progress. The app listens on
127.0.0.1 unless ``--host`` says otherwise.
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if osp.join(ROOT, 'tools') not in sys.path:
    sys.path.insert(0, osp.join(ROOT, 'tools'))

from icmsr.apis import InferenceCancelled, InputTooLargeError, super_resolve_image  # noqa: E402
from icmsr.fileio.image_io import load_image_rgb  # noqa: E402
from icmsr.utils.color_correction import COLOR_FIX_MODES  # noqa: E402
from webui_models import ModelChoiceError, ServedModels  # noqa: E402
from webui_stop import RunningRequests, StopRequest, run_stoppable  # noqa: E402

#: 4096 x 3072: the 12 MP photos phones save by default (4000x3000, 4032x3024, 4080x3072)
#: pass; the x4 result is 16384 x 12288 (201 MP), about 1,000 UNet tiles of 512 px.
DEFAULT_MAX_PIXELS = 4096 * 3072
MAX_FILES = 8             # photos per request
MAX_UPLOAD = '100mb'      # per file (a 12.6 MP 16-bit PNG is at most ~75 MB)
MAX_PROMPT_CHARS = 1000   # the text encoder reads 77 tokens anyway
PREVIEW_SIDE = 2048       # the page shows results at most this long; downloads are full size
TILE_SIZES = (128, 256, 384, 512, 768, 1024)
STAGES = ('encode', 'denoise', 'decode')


def describe_limit(max_pixels: int) -> str:
    """``'12,582,912 pixels (12.6 MP, e.g. 4096x3072)'``: the limit as the page states it."""
    side = int(np.sqrt(max_pixels * 3 / 4))
    return (f'{max_pixels:,} pixels ({max_pixels / 1e6:.1f} MP, e.g. '
            f'{side * 4 // 3}x{side} at 4:3)')


def preview(image: np.ndarray, size: Sequence[int], bicubic: bool) -> np.ndarray:
    """``image`` resized to ``size`` (H, W): bicubic when enlarging the input, area when shrinking."""
    import cv2
    if tuple(image.shape[:2]) == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]),
                      interpolation=cv2.INTER_CUBIC if bicubic else cv2.INTER_AREA)


def preview_size(height: int, width: int, longest: int = PREVIEW_SIDE) -> tuple:
    """``(height, width)`` scaled down so the longer side is at most ``longest``."""
    factor = min(1.0, longest / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def super_resolve_files(model: Any, paths: Sequence[str], tiles: Any, color_fix: str, prompt: str,
                        seed: int, out_dir: str, max_pixels: int, stop: StopRequest,
                        progress: Optional[Callable[..., None]] = None) -> Dict[str, Any]:
    """Super-resolve uploaded files; unreadable or too large ones are reported, not fatal.

    Args:
        model: The inference model (``OneStepSR``).
        paths: Uploaded image files.
        tiles: ``TileSettings`` of the run.
        color_fix: One of ``COLOR_FIX_MODES``.
        prompt: Text prompt.
        seed: Seed set before each image.
        out_dir: Folder the results are written to (PNG, full size).
        max_pixels: Limit on input pixels per photo.
        stop: The request's stop flag (checked after every tile).
        progress: ``progress(fraction, desc=...)`` (Gradio's progress tracker).

    Returns:
        ``pairs`` [(before, after)] previews, ``files`` (written PNGs), ``failed``
        [(name, reason)], ``tiles`` (UNet tiles run), ``summary`` (Markdown).

    Raises:
        InferenceCancelled: The request was stopped.
    """
    from icmsr.apis import save_image
    pairs, files, failed, unet_tiles = [], [], [], 0
    for index, path in enumerate(paths):
        name = osp.basename(path)

        def report(stage: str, done: int, total: int, index: int = index, name: str = name) -> None:
            stop.tile_done()
            if progress is not None:
                progress((index * 3 + STAGES.index(stage) + done / total) / (3 * len(paths)),
                         desc=f'{name}: {stage} tile {done}/{total}')

        try:
            after = super_resolve_image(model, path, prompt=prompt, tiles=tiles, color_fix=color_fix,
                                        seed=seed, max_pixels=max_pixels, progress=report,
                                        should_stop=stop.asked)
        except InferenceCancelled:
            raise
        except (InputTooLargeError, OSError, ValueError) as err:  # say which file and why, go on
            reason = str(err).replace(path, name)  # the upload's server path is not the user's
            failed.append((name, reason[len(name) + 2:] if reason.startswith(f'{name}: ') else reason))
            continue
        unet_tiles += _count(model, after.shape[:2], tiles)
        target = osp.join(out_dir, f'{osp.splitext(name)[0]}_x{model.scale}.png')
        save_image(after, target)
        size = preview_size(*after.shape[:2])
        pairs.append((preview(load_image_rgb(path), size, bicubic=True),
                      preview(after, size, bicubic=False)))
        files.append(target)
    lines = [f'{len(files)} image(s) super-resolved (x{model.scale}, {unet_tiles} UNet tile(s) of '
             f'{tiles.tile_size} px, colour fix {color_fix}).']
    lines += [f'- could not use **{name}**: {reason}' for name, reason in failed]
    return dict(pairs=pairs, files=files, failed=failed, tiles=unet_tiles, summary='\n'.join(lines))


def _count(model: Any, out_size: Sequence[int], tiles: Any) -> int:
    """UNet tiles of an output of ``out_size`` (for the summary)."""
    from icmsr.utils.tiling import tile_starts
    return int(np.prod([len(tile_starts(n, tiles.tile_size, tiles.tile_overlap)) for n in out_size]))


def page_intro(models: ServedModels, max_pixels: int) -> str:
    """The page's opening text: what the app does, what it accepts, how to stop a run."""
    return (
        '# Photo super-resolution (ICM-SR, one-step diffusion)\n'
        f'Each photo comes back **x{models.scale_text()}** (4x wider and 4x taller), as PNG.\n\n'
        f'**Accepted:** PNG, JPEG, BMP, TIFF, WebP (GIF: its first frame); up to '
        f'{describe_limit(max_pixels)} per photo, {MAX_FILES} photos per run, {MAX_UPLOAD[:-2]} MB '
        'per file. A 12 MP phone photo becomes a 200 MP result of about 1,000 tiles: minutes on '
        'a GPU, much longer on a CPU. Larger photos: downscale them first, or start the app with '
        'a higher `--max-pixels`.\n\n'
        'Runs are queued and done one at a time. **Cancel** (or closing the page) stops a run '
        'after the tile in progress.')


def build_app(models: ServedModels, max_pixels: int, out_root: str) -> Any:
    """The Gradio app.

    Args:
        models: The models this server serves (the only ones a browser can choose).
        max_pixels: Limit on input pixels per photo.
        out_root: Folder for the results of the request in progress.

    Returns:
        A ``gradio.Blocks`` (queued, one request at a time).
    """
    import gradio as gr
    running = RunningRequests()

    def refuse(message: str) -> Exception:
        """The error a user sees; an expected refusal, so no traceback in the server log."""
        return gr.Error(message, duration=None, print_exception=False)

    def check(paths, name, tile_size, color_fix, prompt, seed):
        """Refuse anything but the page's own choices (the API takes any JSON)."""
        if not paths:
            raise refuse('Upload at least one photo.')
        if len(paths) > MAX_FILES:
            raise refuse(f'{len(paths)} photos: at most {MAX_FILES} per run.')
        if name not in models.names:
            raise refuse(f'Unknown model {str(name)[:80]!r}: choose one of {models.names}.')
        if str(tile_size) not in tile_choices(name):
            raise refuse(f'Tile size {str(tile_size)[:20]!r}: choose one of {tile_choices(name)}.')
        if color_fix not in COLOR_FIX_MODES:
            raise refuse(f'Colour fix {str(color_fix)[:20]!r}: choose one of {COLOR_FIX_MODES}.')
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            raise refuse(f'The prompt must be text of at most {MAX_PROMPT_CHARS} characters.')
        if not isinstance(seed, (int, float)) or not 0 <= seed < 2 ** 63:
            raise refuse('The seed must be a whole number from 0 to 2**63 - 1.')

    def tile_choices(name: str) -> List[str]:
        default = models.settings(name).tiles.tile_size
        return [str(size) for size in sorted(set(TILE_SIZES) | {default})]

    async def run(paths, name, tile_size, color_fix, prompt, seed, request: gr.Request,
                  progress=gr.Progress()):
        check(paths, name, tile_size, color_fix, prompt, seed)
        out_dir = osp.join(out_root, 'results')
        shutil.rmtree(out_dir, ignore_errors=True)  # the previous run's, already in Gradio's cache
        os.makedirs(out_dir)

        def work():
            model = models.get(name)
            tiles = models.tiles_for(name, int(tile_size))
            return super_resolve_files(model, [getattr(p, 'name', p) for p in paths], tiles,
                                       color_fix, prompt, int(seed), out_dir, max_pixels, stop,
                                       progress)

        with running.register(request.session_hash) as stop:
            try:
                result = await run_stoppable(work, stop)
            except InferenceCancelled:  # the page went away: nobody is listening
                print(stop.report(), flush=True)
                raise refuse('Stopped: the page was closed.')
            except ModelChoiceError as err:
                raise refuse(str(err))
        print(f'request done: {len(result["files"])} image(s), {stop.tiles} tile(s)', flush=True)
        if not result['pairs']:
            raise refuse('Nothing to show:\n' + '\n'.join(
                f'{name}: {reason}' for name, reason in result['failed']))
        for failed, reason in result['failed']:
            gr.Warning(f'{failed}: {reason}', duration=None)
        return (result['pairs'][0], [after for _, after in result['pairs']], result['files'],
                result['summary'], result['pairs'])

    def page_closed(request: gr.Request):
        running.stop_session(request.session_hash, 'page closed')

    def show(pairs, evt: gr.SelectData):
        return pairs[evt.index]

    def model_defaults(name):
        if name not in models.names:
            raise refuse('Unknown model.')
        settings = models.settings(name)
        return (models.describe(name),
                gr.update(choices=tile_choices(name), value=str(settings.tiles.tile_size)),
                gr.update(value=settings.color_fix,
                          label=f"Colour fix (the model's default: {settings.color_fix})"))

    first = models.names[0]
    first_settings = models.settings(first)
    with gr.Blocks(title='ICM-SR super-resolution', delete_cache=(3600, 3600)) as app:
        gr.Markdown(page_intro(models, max_pixels), elem_id='intro')
        with gr.Row():
            with gr.Column(scale=1):
                uploads = gr.File(label=f'Photos (up to {MAX_FILES})', file_count='multiple',
                                  file_types=['image'], elem_id='uploads')
                model = gr.Dropdown(label='Model', choices=models.names, value=first,
                                    elem_id='model')
                about = gr.Markdown(models.describe(first), elem_id='about')
                tile_size = gr.Dropdown(label='Tile size (output pixels)', choices=tile_choices(first),
                                        value=str(first_settings.tiles.tile_size), elem_id='tile')
                color_fix = gr.Radio(label=f"Colour fix (the model's default: "
                                     f'{first_settings.color_fix})', choices=list(COLOR_FIX_MODES),
                                     value=first_settings.color_fix, elem_id='colorfix')
                prompt = gr.Textbox(label='Prompt', value='', max_length=MAX_PROMPT_CHARS)
                seed = gr.Number(label='Seed', value=0, precision=0, minimum=0)
                with gr.Row():
                    button = gr.Button('Super-resolve', variant='primary', elem_id='run')
                    cancel = gr.Button('Cancel', variant='stop', elem_id='cancel')
            with gr.Column(scale=2):
                slider = gr.ImageSlider(label='Before (bicubic) / after', type='numpy', format='png',
                                        elem_id='compare')
                gallery = gr.Gallery(label='Results (click to compare)', columns=4, format='png',
                                     elem_id='gallery')
                downloads = gr.File(label='Download (full size)', file_count='multiple',
                                    elem_id='downloads')
                status = gr.Markdown(elem_id='status')
        pairs = gr.State([])
        event = button.click(run, [uploads, model, tile_size, color_fix, prompt, seed],
                             [slider, gallery, downloads, status, pairs], api_name='super_resolve')
        cancel.click(None, None, None, cancels=[event], api_visibility='private')
        gallery.select(show, pairs, slider, api_visibility='private')
        model.change(model_defaults, model, [about, tile_size, color_fix], queue=False,
                     api_visibility='private')
        app.unload(page_closed)
    return app.queue(default_concurrency_limit=1)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='', help='config file (with --weights)')
    parser.add_argument('--weights', default='', help='checkpoint .pth (with --config)')
    parser.add_argument('--export', action='append', default=[],
                        help='export folder of tools/export_lora.py (repeat for several)')
    parser.add_argument('--models-dir', default='', help='folder whose sub-folders are exports')
    parser.add_argument('--max-pixels', type=int, default=DEFAULT_MAX_PIXELS,
                        help=f'largest input photo in pixels (default {DEFAULT_MAX_PIXELS:,} = '
                        '4096x3072: a 12 MP phone photo)')
    parser.add_argument('--device', default=None, help='cuda / cpu (default: CUDA if available)')
    parser.add_argument('--host', default='127.0.0.1', help='address to listen on (default: loopback)')
    parser.add_argument('--port', type=int, default=7860)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Check the models, start the app and serve until interrupted."""
    args = parse_args(argv)
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no calls home
    try:
        import gradio  # noqa: F401
    except ImportError:
        print('error: the web app needs Gradio: pip install -r requirements/webui.txt', file=sys.stderr)
        return 2
    if args.max_pixels < 1:
        print(f'error: --max-pixels {args.max_pixels}: give a positive number of pixels',
              file=sys.stderr)
        return 2
    try:
        models = ServedModels.from_args(args.config, args.weights, args.export, args.models_dir,
                                        args.device)
        models.load_all()
    except ModelChoiceError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'serving {models.names}; inputs up to {describe_limit(args.max_pixels)}', flush=True)
    with tempfile.TemporaryDirectory(prefix='icmsr_webui_') as out_root:
        app = build_app(models, args.max_pixels, out_root)
        # System fonts: the default theme would fetch web fonts, and the app must work offline.
        theme = gradio.themes.Default(font=['sans-serif'], font_mono=['monospace'])
        app.launch(server_name=args.host, server_port=args.port, ssr_mode=False, theme=theme,
                   footer_links=[], max_file_size=MAX_UPLOAD)
    return 0


if __name__ == '__main__':
    sys.exit(main())
