"""Visualisation grids carry a label over every column."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from icmsr.engine.visualization_hook import SRVisualizationHook, sr_grid


def _columns(b=2, size=48):
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(b, 3, size // 4, size // 4, generator=g)
    sr, hq = torch.rand(b, 3, size, size, generator=g), torch.rand(b, 3, size, size, generator=g)
    return [sr, lq, hq, torch.rand(b, 3, size, size, generator=g),
            torch.rand(b, 1, size, size, generator=g)]


def test_labelled_grid_is_the_plain_grid_under_a_label_strip():
    cols = _columns()
    plain = sr_grid(cols, 2)
    labelled = sr_grid(cols, 2, ['LQ', 'SR', 'HQ', 'colormap', 'Canny'])
    strip = labelled.shape[0] - plain.shape[0]
    assert strip > 0 and labelled.shape[1:] == plain.shape[1:]
    assert np.array_equal(labelled[strip:], plain)
    header = labelled[:strip].min(axis=2)  # dark pixels = text
    for j in range(5):  # every column has text above it, inside its own span
        left = 2 + j * (48 + 2)
        assert (header[:, left:left + 48] < 128).any(), j
    assert (header[:, :2] == 255).all()  # the margin stays blank


def test_label_count_must_match_columns():
    with pytest.raises(ValueError, match='2 labels for 5 columns'):
        sr_grid(_columns(), 2, ['LQ', 'SR'])


@pytest.mark.parametrize('mode, expected', [
    ('multi', ['LQ', 'SR', 'HQ', 'colormap', 'Canny']),
    ('canny', ['LQ', 'SR', 'HQ', 'Canny']),
    ('lq', ['LQ', 'SR', 'HQ', 'LQ condition']),
])
def test_hook_labels_follow_the_condition_kind(mode, expected):
    model = SimpleNamespace(condition=SimpleNamespace(kind=mode))
    assert SRVisualizationHook.labels(model, len(expected)) == expected
    plain = SimpleNamespace(condition=None)
    assert SRVisualizationHook.labels(plain, 4) == ['LQ', 'SR', 'HQ', 'condition 1']


def test_grid_shows_the_batch_the_step_trained_on(tiny_data, tmp_path):
    """Issue: the hook re-degraded the batch, so its grid was not the trained batch.

    The LQ and SR columns are compared with the generator's own input and output
    of the step (a forward hook), and the hook draws no random numbers.
    """
    import os
    import random
    from mmengine.config import Config
    from mmengine.runner import Runner
    os.environ['ICMSR_TINY_DATA'] = str(tiny_data)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = Config.fromfile(os.path.join(root, 'configs', 'icmsr_tiny.py'))
    cfg.work_dir, cfg.log_level, cfg.experiment_name = str(tmp_path), 'WARNING', 'vis_grid'
    cfg.train_cfg.max_iters = 1
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.default_hooks.visualization.interval = 1
    cfg.default_hooks.checkpoint.interval = 10
    runner = Runner.from_cfg(cfg)
    seen, grids = [], []
    runner.model.generator.register_forward_hook(lambda m, args, out: seen.append((args[0], out[0])))
    runner.visualizer.add_image = lambda name, image, step: grids.append(image)
    runner.train()
    (lq, x_hat), = seen
    model, hook = runner.model, [h for h in runner.hooks if isinstance(h, SRVisualizationHook)][0]
    batch = model.last_batch
    assert torch.equal(batch['lq'] * 2 - 1, lq)  # as train_step maps it for the generator
    assert torch.equal(batch['sr'], (x_hat.detach() + 1) / 2)
    columns = [batch['lq'], batch['sr'], batch['gt'], *model.condition_panels(batch['cond'])]
    expected = sr_grid(columns, hook.max_images, hook.labels(model, len(columns)))
    assert len(grids) == 1 and np.array_equal(grids[0], expected)
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    hook._log_grid(runner)
    assert states[0] == random.getstate() and np.array_equal(states[1], np.random.get_state()[1])
    assert torch.equal(states[2], torch.get_rng_state())
