"""Write a caption file for a folder of images with a prompt extractor (RAM, DAPE, BLIP, ...).

The output is what the datasets' ``caption_file`` reads: ``.json`` gives one object
``{"relative/path.png": "caption"}``, any other extension ``relative/path.png<TAB>caption``
lines. The run is resumable: images already in ``--out`` are skipped, and the file
is rewritten atomically every ``--save-every`` images and at the end (also after an
interruption). Images that cannot be read are skipped with a warning naming them.

``--extractor`` is a preset name (``ram``, ``ram_plus``, ``dape``, ``blip``), a
registered type (``RAMTagger``), or a Python config file that defines
``extractor = dict(type=..., ...)``; a training config works too (its
``model.text.extractor``, or ``model.text.test_extractor`` with ``--phase test``).

Examples::

    ICMSR_RAM=/weights/ram_swin_large_14m.pth \\
        python tools/extract_prompts.py --input data/DIV2K/DIV2K_train_HR --extractor ram \\
        --out data/DIV2K/captions_ram.json
    ICMSR_RAM=... ICMSR_DAPE=/weights/DAPE.pth \\
        python tools/extract_prompts.py --input RealSR/test_LR --extractor dape --out realsr_dape.txt
"""
import argparse
import json
import os
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from icmsr.fileio.captions import load_captions  # noqa: E402
from icmsr.fileio.file_lists import scan_images  # noqa: E402
from icmsr.utils.atomic_io import atomic_write_text  # noqa: E402
from icmsr.fileio.image_io import ImageLoadError, load_image_rgb  # noqa: E402
from icmsr.models.prompt_extractors import (PRESETS, PromptExtractor,  # noqa: E402
                                            build_prompt_extractor)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line (default ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--input', required=True, help='folder of images (searched recursively)')
    p.add_argument('--extractor', required=True,
                   help=f'preset ({", ".join(sorted(PRESETS))}), registered type, or .py config')
    p.add_argument('--out', required=True, help='caption file: .json, or .txt/.tsv (TAB lines)')
    p.add_argument('--phase', choices=('train', 'test'), default='train',
                   help='with a training config: its extractor (train) or test_extractor (test)')
    p.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: cuda if any)')
    p.add_argument('--save-every', type=int, default=50, help='rewrite the file every N images')
    p.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return p.parse_args(argv)


def extractor_config(spec: str, phase: str = 'train') -> Any:
    """The extractor named by ``--extractor``: a name, or the config read from a .py file.

    Args:
        spec: preset / type name or path of a Python config.
        phase: which extractor of a training config's ``model.text``.

    Returns:
        A name or a config dict for :func:`build_prompt_extractor`.
    """
    if not spec.endswith('.py'):
        return spec
    if not os.path.isfile(spec):
        raise SystemExit(f'--extractor {spec!r}: no such config file.')
    from mmengine.config import Config
    cfg = Config.fromfile(spec)
    if 'extractor' in cfg:
        return cfg.extractor.to_dict()
    text = (cfg.get('model') or {}).get('text') or {}
    key = 'test_extractor' if phase == 'test' and text.get('test_extractor') else 'extractor'
    if not text.get(key):
        raise SystemExit(f'--extractor {spec!r} defines neither `extractor = dict(...)` nor '
                         'model.text.extractor.')
    found = text[key]
    return found.to_dict() if hasattr(found, 'to_dict') else found


def write_captions(path: str, captions: Dict[str, str]) -> None:
    """Write the caption file atomically (temporary file in the same folder, then rename).

    Args:
        path: ``.json`` for a JSON object, anything else for ``name<TAB>caption`` lines.
        captions: ``{relative path: caption}``.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if path.lower().endswith('.json'):
        text = json.dumps(captions, indent=1, ensure_ascii=False, sort_keys=True) + '\n'
    else:
        text = ''.join(f'{name}\t{" ".join(caption.split())}\n'
                       for name, caption in sorted(captions.items()))
    atomic_write_text(path, text)


def extract_folder(folder: str, extractor: PromptExtractor, out: str, device: torch.device,
                   save_every: int = 50, progress: bool = True) -> Dict[str, Any]:
    """Caption every image of ``folder`` not yet in ``out``.

    Args:
        folder: image folder.
        extractor: the prompt extractor.
        out: caption file (read first when it exists, to resume).
        device: where the images (and so the extractor) go.
        save_every: rewrite ``out`` after this many new captions.
        progress: show a progress bar.

    Returns:
        ``dict(captions=..., new=[...], skipped_bad=[...])``.
    """
    files = scan_images(folder)
    if not files:
        raise SystemExit(f'--input {folder!r}: no images found.')
    captions = load_captions(out) if os.path.exists(out) else {}
    todo = [rel for rel in files if rel not in captions]
    new: List[str] = []
    bad: List[str] = []
    try:
        for rel in tqdm(todo, desc='prompts', unit='img', disable=not progress):
            path = os.path.join(folder, rel)
            try:
                rgb = load_image_rgb(path)
            except ImageLoadError as err:
                warnings.warn(f'skipping {path}: {err.reason}', stacklevel=2)
                bad.append(rel)
                continue
            image = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div(255)
            captions[rel] = extractor(image.to(device))[0]
            new.append(rel)
            if len(new) % max(1, save_every) == 0:
                write_captions(out, captions)
    finally:
        if new:
            write_captions(out, captions)
    return dict(captions=captions, new=new, skipped_bad=bad)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the tool; returns what :func:`extract_folder` returns."""
    args = parse_args(argv)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    extractor = build_prompt_extractor(extractor_config(args.extractor, args.phase))
    result = extract_folder(args.input, extractor, args.out, device, args.save_every,
                            not args.no_progress)
    print(f'{len(result["new"])} new caption(s), {len(result["captions"])} in {args.out}'
          + (f'; {len(result["skipped_bad"])} unreadable image(s) skipped: '
             f'{", ".join(result["skipped_bad"])}' if result['skipped_bad'] else ''))
    return result


if __name__ == '__main__':
    main()
