"""``optimizer=dict(type='AdamW8bit')``: bitsandbytes' 8-bit AdamW, with clear errors."""
import sys

import pytest
import torch

from icmsr.registry import OPTIMIZERS

bnb = pytest.importorskip('bitsandbytes')


def _fit(optimizer_factory, steps=20):
    torch.manual_seed(0)
    start, target = torch.randn(64, 128), torch.randn(64, 128)
    weight = torch.nn.Parameter(start.clone())
    optimizer = optimizer_factory([weight])
    for _ in range(steps):
        optimizer.zero_grad()
        ((weight - target) ** 2).sum().backward()
        optimizer.step()
    return optimizer, weight, weight.detach() - start


def test_registered_name_builds_bitsandbytes_8bit_adamw():
    try:
        opt, weight, moved = _fit(lambda p: OPTIMIZERS.build(
            dict(type='AdamW8bit', params=p, lr=1e-2, weight_decay=0.0)))
    except RuntimeError as err:  # a bitsandbytes build without a CPU backend
        assert 'AdamW8bit' in str(err) and "type='AdamW'" in str(err)
        pytest.skip(f'bitsandbytes has no CPU backend here: {err}')
    assert isinstance(opt, bnb.optim.AdamW8bit)
    # The moments really are 8-bit (8192 elements > min_8bit_size).
    assert opt.state[weight]['state1'].dtype == torch.uint8
    assert opt.state[weight]['state2'].dtype == torch.uint8
    _, _, reference = _fit(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0))
    # Same trajectory as torch's AdamW up to the 8-bit quantization of the moments.
    rel = float((moved - reference).norm() / reference.norm())
    assert 0 < rel < 0.1, rel


def test_missing_bitsandbytes_is_named(monkeypatch):
    # None in sys.modules makes the import fail as for an absent package.
    monkeypatch.setitem(sys.modules, 'bitsandbytes', None)
    monkeypatch.setitem(sys.modules, 'bitsandbytes.optim', None)
    with pytest.raises(ImportError, match=r"pip install bitsandbytes.*type='AdamW'"):
        OPTIMIZERS.build(dict(type='AdamW8bit', params=[torch.nn.Parameter(torch.zeros(4))]))


def test_backend_without_kernels_fails_at_build_time(monkeypatch):
    def no_kernel(self, closure=None):
        raise NotImplementedError("Could not run 'bitsandbytes::optimizer_update_8bit_blockwise'"
                                  " with arguments from the 'CPU' backend")

    monkeypatch.setattr(bnb.optim.AdamW8bit, 'step', no_kernel)
    with pytest.raises(RuntimeError, match=r"cannot run its 8-bit optimizer on cpu.*"
                                           r"NotImplementedError.*type='AdamW'"):
        OPTIMIZERS.build(dict(type='AdamW8bit', params=[torch.nn.Parameter(torch.zeros(4))]))
