"""Kill-and-resume equals the uninterrupted run, bit for bit (toy model, CPU).

The toy draws from NumPy's global generator (data), torch's global generator
and a private ``torch.Generator`` (model), like ICM-SR. The last test is the
control: without RandomStateHook the resumed run diverges, so the first test
can fail.
"""
import torch
from mmengine.runner import Runner

from engine_toy import CrashAfter, SimulatedCrash, toy_runner_cfg

MAX_ITERS = 7



def _state(runner):
    params = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    optim = runner.optim_wrapper.state_dict()
    return params, optim


def _train(work_dir, crash_after=None, resume=False, without_hook=None):
    cfg = toy_runner_cfg(str(work_dir), max_iters=MAX_ITERS)
    if without_hook is not None:
        cfg['default_hooks'].pop(without_hook)
    hooks = [CrashAfter(crash_after)] if crash_after else []
    runner = Runner(**cfg, custom_hooks=hooks, resume=resume)
    try:
        runner.train()
    except SimulatedCrash:
        return None
    return _state(runner)


def _assert_same(a, b):
    pa, oa = a
    pb, ob = b
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    for name in oa:
        for (ia, sa), (ib, sb) in zip(oa[name]['state'].items(),
                                      ob[name]['state'].items()):
            for key in sa:
                assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), (name, key)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    full = _train(tmp_path / 'full')
    # Killed after iteration 5; the last checkpoint is iter_3. Auto-resume continues from it
    # across an epoch boundary of the dataloader (4 batches per epoch).
    assert _train(tmp_path / 'killed', crash_after=5) is None
    ckpt = torch.load(tmp_path / 'killed' / 'iter_3.pth', map_location='cpu')
    assert 'random_states' in ckpt and ckpt['meta']['iter'] == 3
    resumed = _train(tmp_path / 'killed', resume=True)
    _assert_same(full, resumed)


def test_resume_without_random_state_hook_diverges(tmp_path):
    """Control: MMEngine's plain resume re-seeds, so the continuation differs."""
    off = 'random_state'
    full = _train(tmp_path / 'full', without_hook=off)
    assert _train(tmp_path / 'killed', crash_after=4, without_hook=off) is None
    resumed = _train(tmp_path / 'killed', resume=True, without_hook=off)
    assert not torch.equal(full[0]['generator.weight'], resumed[0]['generator.weight'])
