"""tools/export_lora.py on a checkpoint that pickles foreign objects: our flag, our words."""
import importlib.util
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'icmsr_tiny.py')


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def _tool():
    spec = importlib.util.spec_from_file_location('export_tool', osp.join(ROOT, 'tools',
                                                                          'export_lora.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_refusal_names_trust_flag_without_colour_codes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')  # must not bypass the policy
    ckpt = str(tmp_path / 'foreign.pth')
    torch.save({'state_dict': {}, 'obj': _Payload()}, ckpt)
    tool = _tool()
    args = [ckpt, '--config', TINY, '--out', str(tmp_path / 'out')]
    assert tool.main(args) == 2
    err = capsys.readouterr().err
    assert f'Refusing to unpickle {ckpt}' in err and '--trust-checkpoint' in err
    assert '\x1b[' not in err and 'weights_only' not in err
    assert not osp.exists(tmp_path / 'out')
    # With the flag the file is unpickled; this one then lacks the generator weights.
    with pytest.raises(KeyError, match='lacks generator weights'):
        tool.main(args + ['--trust-checkpoint'])


def test_infer_refuses_foreign_pickles_with_our_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')  # must not bypass the policy
    ckpt = str(tmp_path / 'foreign.pth')
    torch.save({'state_dict': {}, 'obj': _Payload()}, ckpt)
    (tmp_path / 'in').mkdir()
    # An image to work on: an empty --input folder is refused before the model is built.
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'in' / 'a.png')
    spec = importlib.util.spec_from_file_location('infer_tool', osp.join(ROOT, 'tools', 'infer.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = ['--config', TINY, '--weights', ckpt, '--input', str(tmp_path / 'in'),
            '--output', str(tmp_path / 'out'), '--device', 'cpu']
    assert tool.main(args) == 2
    err = capsys.readouterr().err
    assert f'Refusing to unpickle {ckpt}' in err and '--trust-checkpoint' in err
    assert '\x1b[' not in err and 'weights_only' not in err
    # With the flag the file is unpickled; this one then lacks the generator weights.
    with pytest.raises(KeyError, match='lacks generator weights'):
        tool.main(args + ['--trust-checkpoint'])
