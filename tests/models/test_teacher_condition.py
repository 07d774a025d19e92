"""The one condition block: extractor and adapters built together, pairing checked at build time."""
import pytest
import torch

from model_testlib import build_tiny
from tiny_config import tiny_adapter, tiny_model_cfg

from icmsr.models import TeacherCondition
from icmsr.registry import MODELS


def test_each_kind_builds_its_extractor_and_adapters():
    for kind, adapters, channels in (('multi', ['color', 'canny'], [3, 1]),
                                     ('colormap', ['color'], [3]), ('canny', ['canny'], [1]),
                                     ('lq', ['color'], [3])):
        cond = TeacherCondition(kind, [tiny_adapter(a) for a in adapters])
        assert cond.extractor.mode == kind
        hq, lq = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 16, 16)
        inputs = cond.extract(hq, lq)
        inputs = inputs if isinstance(inputs, list) else [inputs]
        assert [x.shape[1] for x in inputs] == channels
        feats = cond.features(cond.extract(hq, lq))
        assert len(feats) == 4 and feats[0].shape[0] == 2


def test_wrong_pairings_name_the_keys():
    with pytest.raises(ValueError, match=r"condition\.kind='multi' feeds 2 adapter\(s\).*condition\.adapters has 1"):
        TeacherCondition('multi', [tiny_adapter('color')])
    # A Canny (1-channel) adapter where the colormap (3 channels) goes, and vice versa.
    with pytest.raises(ValueError, match=r'condition\.adapters\[0\] takes in_channels=1'):
        TeacherCondition('colormap', [tiny_adapter('canny')])
    with pytest.raises(ValueError, match=r'condition\.adapters\[1\] takes in_channels=3'):
        TeacherCondition('multi', [tiny_adapter('color'), tiny_adapter('color')])
    with pytest.raises(ValueError, match=r'condition\.weights has 3 entries'):
        TeacherCondition('multi', [tiny_adapter('color'), tiny_adapter('canny')], weights=[1, 1, 1])
    with pytest.raises(KeyError, match=r"condition\.kind='edges'"):
        TeacherCondition('edges', [tiny_adapter('canny')])
    with pytest.raises(ValueError, match=r'condition\.extractor\.mode'):
        TeacherCondition('canny', [tiny_adapter('canny')], extractor=dict(mode='colormap'))


def test_the_model_validates_its_condition_block_when_built():
    cfg = tiny_model_cfg('multi')
    cfg['condition'] = dict(kind='canny', adapters=[tiny_adapter('color')])
    with pytest.raises(ValueError, match=r'condition\.adapters\[0\] takes in_channels=3'):
        MODELS.build(cfg)
    assert build_tiny(None).condition is None
