"""Figure-2 tool on a tiny random teacher: grid layout, RMSE table, adapter effect, errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope='module')
def tool():
    from tool_loading import load_tool
    return load_tool('tools/analysis/denoise_prior.py')


def _config(tmp_path, condition='multi'):
    from mmengine.config import Config
    from tiny_config import tiny_model_cfg
    path = str(tmp_path / 'tiny.py')
    Config(dict(model=tiny_model_cfg(condition))).dump(path)
    return path


def _image(path):
    yy, xx = np.mgrid[0:80, 0:96]
    img = np.stack([xx * 2.5, yy * 3.0, np.full_like(xx, 60)], -1).astype(np.uint8)
    img[20:50, 30:70] = (230, 40, 40)  # a red box: colour and edges to condition on
    Image.fromarray(img).save(path)


def test_grid_and_table(tool, tmp_path):
    _image(str(tmp_path / 'box.png'))
    out = tmp_path / 'fig2'
    code = tool.main(['--config', _config(tmp_path), '--images', str(tmp_path / 'box.png'),
                      '--timesteps', '1', '980', '--size', '64', '--cell', '64', '--out', str(out),
                      '--device', 'cpu'])
    assert code == 0
    grid = Image.open(out / 'box.png')
    assert grid.size == (90 + 68 * 3, 44 + 68 * 4)  # label column + GT + 2 timesteps; 4 condition rows
    table = json.loads((out / 'denoise_prior.json').read_text())['rmse']['box']
    assert set(table) == {'text', 'colormap', 'canny', 'multi'}
    for cond, (early, late) in table.items():
        # At t=1 the noisy latent is almost the GT latent: every prediction is close to z0.
        assert early < late, (cond, early, late)
    # The adapters change the teacher's prediction at large t.
    assert abs(table['multi'][1] - table['text'][1]) > 1e-4


def test_missing_adapter_is_explained(tool, tmp_path):
    from mmengine.config import Config
    from icmsr.utils.setup_env import register_all_modules
    register_all_modules()
    prior = tool.DenoisePrior(Config.fromfile(_config(tmp_path, condition=None)).model.to_dict())
    assert list(prior.conditions) == []
    with pytest.raises(ValueError, match='--adapter-color'):
        prior.predict(torch.rand(1, 3, 64, 64), [500], conditions=['canny'])
