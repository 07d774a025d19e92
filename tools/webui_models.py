"""The models a web-app server serves: fixed on its command line, chosen in the page by name.

A browser only ever sends a model's *name*; the server maps it to the config,
checkpoint or export folder it was started with. No path from a request reaches
the config loader (a config is Python and runs when loaded) or the checkpoint reader.
"""
import dataclasses
import os
import os.path as osp
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from icmsr.apis import init_model
from icmsr.apis.lora_export import META_FILE
from icmsr.utils.tiling import TileSettings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'icmsr_tiny_base.py')
DEMO_WEIGHTS = osp.join(ROOT, 'work_dirs', 'icmsr_tiny_base', 'iter_200.pth')
DEMO_NAME = 'demo (tiny)'


class ModelChoiceError(ValueError):
    """A model given on the command line cannot be served (the message says why and what to do)."""


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """What a served model does by default (read from the built model, as ``tools/infer.py`` uses it).

    Attributes:
        scale: Upscaling factor.
        tiles: The model's tiling (``model.tiles``, from its ``test_cfg``).
        color_fix: The model's colour fix (``model.color_fix``).
    """

    scale: int
    tiles: TileSettings
    color_fix: str


def _check_export(folder: str) -> str:
    if not osp.isfile(osp.join(folder, META_FILE)):
        raise ModelChoiceError(f'{folder}: no {META_FILE} in it; give a folder written by '
                               'tools/export_lora.py.')
    return folder


class ServedModels:
    """Name -> ``(config or None, weights)`` of every served model; one model kept in memory.

    Args:
        sources: ``{name: (config, weights)}`` in the page's order.
        device: Device to build models on.
        demo: Name of the tiny demo model, if it is served.
    """

    def __init__(self, sources: Dict[str, Tuple[Optional[str], str]], device: Optional[str] = None,
                 demo: Optional[str] = None) -> None:
        if not sources:
            raise ModelChoiceError('no model to serve')
        self.sources = dict(sources)
        self.names: List[str] = list(sources)
        self.device, self.demo = device, demo
        self._settings: Dict[str, ModelSettings] = {}
        self._lock = threading.Lock()
        self._key: Optional[str] = None
        self._model: Any = None

    @classmethod
    def from_args(cls, config: str = '', weights: str = '', exports: Sequence[str] = (),
                  models_dir: str = '', device: Optional[str] = None) -> 'ServedModels':
        """The models of the command line; the demo checkpoint when none is given.

        Args:
            config: Config file (with ``weights``).
            weights: ``.pth`` checkpoint (or an export folder).
            exports: Export folders; each is named after its folder.
            models_dir: Folder whose sub-folders holding an export are served, by sub-folder name.
            device: Device to build models on.

        Raises:
            ModelChoiceError: A missing file or folder, or two models of the same name.
        """
        found: List[Tuple[str, Optional[str], str]] = []
        if config or weights:
            if not weights:
                raise ModelChoiceError(f'--config {config}: give the checkpoint with --weights.')
            if not osp.exists(weights):
                raise ModelChoiceError(f'--weights {weights}: no such file or folder.')
            if osp.isdir(weights):
                found.append((osp.basename(osp.normpath(weights)), None, _check_export(weights)))
            elif not config:
                raise ModelChoiceError(f'--weights {weights}: give the config it was trained with '
                                       '(--config).')
            elif not osp.isfile(config):
                raise ModelChoiceError(f'--config {config}: no such file.')
            else:
                stem = osp.splitext(osp.basename(config))[0]
                found.append((f'{stem} ({osp.basename(weights)})', config, weights))
        for folder in exports:
            found.append((osp.basename(osp.normpath(folder)), None, _check_export(folder)))
        if models_dir:
            if not osp.isdir(models_dir):
                raise ModelChoiceError(f'--models-dir {models_dir}: no such folder.')
            subs = sorted(d for d in os.listdir(models_dir)
                          if osp.isfile(osp.join(models_dir, d, META_FILE)))
            if not subs:
                raise ModelChoiceError(f'--models-dir {models_dir}: no sub-folder holds an export '
                                       f'({META_FILE}).')
            found += [(d, None, osp.join(models_dir, d)) for d in subs]
        if not found:
            if not osp.isfile(DEMO_WEIGHTS):
                raise ModelChoiceError(
                    f'no model given and the demo checkpoint {osp.relpath(DEMO_WEIGHTS, ROOT)} is '
                    'absent: run `bash tools/demo.sh` (trains the tiny demo model on the CPU), or '
                    'give --export DIR, --models-dir DIR or --config CFG --weights CKPT.')
            return cls({DEMO_NAME: (DEMO_CONFIG, DEMO_WEIGHTS)}, device, demo=DEMO_NAME)
        sources: Dict[str, Tuple[Optional[str], str]] = {}
        for name, cfg, path in found:
            if name in sources:
                raise ModelChoiceError(f'two models are named {name!r} ({sources[name][1]} and '
                                       f'{path}): rename one folder.')
            sources[name] = (cfg, path)
        return cls(sources, device)

    def get(self, name: str) -> Any:
        """The model called ``name``, built on first use (the previous one is freed first).

        Raises:
            ModelChoiceError: ``name`` is not served, or its model could not be built.
        """
        if name not in self.sources:
            raise ModelChoiceError(f'unknown model {name!r}; served: {self.names}')
        with self._lock:
            if self._key != name:
                self._model, self._key = None, None
                config, weights = self.sources[name]
                try:
                    self._model = init_model(config, weights, device=self.device)
                except (OSError, KeyError, ValueError, RuntimeError) as err:
                    raise ModelChoiceError(f'model {name!r} could not be loaded from {weights}: '
                                           f'{type(err).__name__}: {err}') from err
                self._key = name
                m = self._model
                self._settings[name] = ModelSettings(int(m.scale), m.tiles, m.color_fix)
            return self._model

    def load_all(self) -> None:
        """Build every model once (checks it loads, reads its defaults); the first stays loaded."""
        for name in reversed(self.names):
            self.get(name)

    def settings(self, name: str) -> ModelSettings:
        """The defaults of ``name`` (after :meth:`load_all` or its first use)."""
        if name not in self._settings:
            self.get(name)
        return self._settings[name]

    def tiles_for(self, name: str, tile_size: int) -> TileSettings:
        """The model's tiling with the UNet tile the page chose (the overlap at most half of it)."""
        tiles = self.settings(name).tiles
        return dataclasses.replace(tiles, tile_size=int(tile_size),
                                   tile_overlap=min(tiles.tile_overlap, int(tile_size) // 2))

    def scale_text(self) -> str:
        """The served scale factor(s), e.g. ``'4'``."""
        return '/'.join(str(s) for s in sorted({self.settings(n).scale for n in self.names}))

    def describe(self, name: str) -> str:
        """Markdown: where the model comes from, its quality caveat, its defaults."""
        s = self.settings(name)
        t = s.tiles
        config, weights = self.sources[name]
        if name == self.demo:
            what = ('**The tiny demo model** of `bash tools/demo.sh`, trained for minutes on a CPU: '
                    'it shows that the app works and does **not** give real-photo quality. Start '
                    'the app with `--export` of a trained model for real photos.')
        elif config is None:
            what = f'Export `{osp.basename(osp.normpath(weights))}`.'
        else:
            what = f'Config `{osp.basename(config)}` with checkpoint `{osp.basename(weights)}`.'
        return (f'{what}\n\nx{s.scale}; its defaults (as `tools/infer.py` uses them): colour fix '
                f'`{s.color_fix}`, UNet tiles {t.tile_size} px (overlap {t.tile_overlap}), VAE tiles '
                f'{t.vae_tile_size} px (overlap {t.vae_overlap}).')
