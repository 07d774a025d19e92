"""Which LQ reaches the generator in training (ICMSR.training_inputs) and at test time."""
import pytest
import torch

from icmsr.models.data_preprocessor import SRDataPreprocessor
from icmsr.models.one_step_sr import resize_to


class _FixedDegradation(torch.nn.Module):
    """Returns known tensors so the test can tell which one the model used."""

    def __init__(self, with_lq_up: bool) -> None:
        super().__init__()
        self.with_lq_up = with_lq_up

    def forward(self, gt: torch.Tensor) -> dict:
        b, c, h, w = gt.shape
        out = {'gt': gt, 'lq': torch.full((b, c, h // 4, w // 4), 0.25)}
        if self.with_lq_up:
            out['lq_up'] = torch.full((b, c, h, w), 0.75)
        return out


def _batch() -> dict:
    gt = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    return {'inputs': {'gt': [gt, gt.clone()]}, 'data_samples': [None, None]}


@pytest.fixture
def model_with(tiny_model):
    saved = tiny_model.degradation

    def use(degradation):
        tiny_model.degradation = degradation
        return tiny_model
    yield use
    tiny_model.degradation = saved


def test_training_uses_the_degradations_resized_back_lq_when_given(model_with):
    out = model_with(_FixedDegradation(with_lq_up=True)).training_inputs(_batch())
    assert out['lq'].shape == out['gt'].shape == (2, 3, 32, 32)
    assert torch.all(out['lq'] == 0.75)


def test_training_resizes_native_lq_bicubic_otherwise(model_with):
    batch = _batch()
    gts = [g.clone() for g in batch['inputs']['gt']]
    out = model_with(_FixedDegradation(with_lq_up=False)).training_inputs(batch)
    expected = resize_to(torch.full((2, 3, 8, 8), 0.25), (32, 32))
    assert torch.equal(out['lq'], expected)
    assert torch.allclose(out['gt'], torch.stack([g.float() / 255 for g in gts]))


def test_training_batch_without_lq_needs_a_degradation(model_with):
    with pytest.raises(ValueError, match='model.degradation'):
        model_with(None).training_inputs(_batch())


def test_preprocessor_only_stacks_and_scales():
    pre = SRDataPreprocessor()
    lq = torch.randint(0, 256, (3, 8, 12), dtype=torch.uint8)
    out = pre({'inputs': {'lq': [lq]}}, training=False)['inputs']
    assert out['gt'] is None and torch.equal(out['lq'][0], lq.float() / 255)
    with pytest.raises(KeyError, match="'gt' and/or 'lq'"):
        pre({'inputs': {}}, training=False)
