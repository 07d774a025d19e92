"""SRDataPreprocessor: which LQ reaches the model in training."""
import torch

from icmsr.models.data_preprocessor import SRDataPreprocessor, resize_to


class _FixedDegradation:
    """Returns known tensors so the test can tell which one the preprocessor used."""

    def __init__(self, with_lq_up: bool) -> None:
        self.with_lq_up = with_lq_up

    def __call__(self, gt: torch.Tensor) -> dict:
        b, c, h, w = gt.shape
        out = {'gt': gt, 'lq': torch.full((b, c, h // 4, w // 4), 0.25)}
        if self.with_lq_up:
            out['lq_up'] = torch.full((b, c, h, w), 0.75)
        return out


def _batch() -> dict:
    gt = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    return {'inputs': {'gt': [gt, gt.clone()]}, 'data_samples': [None, None]}


def test_training_uses_the_degradations_resized_back_lq_when_given():
    pre = SRDataPreprocessor(degradation=_FixedDegradation(with_lq_up=True))
    out = pre(_batch(), training=True)['inputs']
    assert out['lq'].shape == out['gt'].shape == (2, 3, 32, 32)
    assert torch.all(out['lq'] == 0.75)


def test_training_resizes_native_lq_bicubic_otherwise():
    pre = SRDataPreprocessor(degradation=_FixedDegradation(with_lq_up=False))
    batch = _batch()
    gts = [g.clone() for g in batch['inputs']['gt']]
    out = pre(batch, training=True)['inputs']
    expected = resize_to(torch.full((2, 3, 8, 8), 0.25), (32, 32))
    assert torch.equal(out['lq'], expected)
    assert torch.allclose(out['gt'], torch.stack([g.float() / 255 for g in gts]))
