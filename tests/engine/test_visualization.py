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
