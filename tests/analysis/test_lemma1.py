"""Lemma 1 experiment: the dense condition collapses eps_psi onto eps; the sparse one does not."""

import pytest


@pytest.fixture(scope='module')
def lemma1():
    from tool_loading import load_tool
    return load_tool('tools/analysis/lemma1.py')


@pytest.fixture(scope='module')
def result(lemma1):
    # A short, fast-learning run: the collapse is already clear after a few hundred steps.
    return lemma1.run(steps=300, batch_size=256, eval_every=150, seed=0, lr=5e-3, verbose=False)


def test_dense_condition_collapses_to_sds(result):
    dense, sparse = result['history']['dense'][-1], result['history']['sparse'][-1]
    # Lemma 1: eps_psi -> eps under the dense condition, far below the sparse case.
    assert dense['err'] < 0.3 * sparse['err'], (dense, sparse)
    assert dense['err'] < 0.2
    assert dense['cos'] > 0.95  # VSD direction ~ SDS direction
    assert sparse['cos'] < 0.8


def test_sparse_case_sits_at_its_closed_form_floor(result):
    sparse = result['history']['sparse'][-1]
    # No denoiser can beat the posterior mean; a trained one gets close to it.
    assert sparse['err'] >= 0.97 * result['floor']
    assert sparse['err'] < 1.1 * result['floor']
    assert result['floor'] > 0.3


def test_closed_form_floor_matches_monte_carlo(lemma1):
    import torch
    problem = lemma1.ToyProblem(seed=3)
    g = torch.Generator().manual_seed(0)
    b = problem.sample(20000, 'sparse', g)
    # Posterior-mean denoiser computed directly from the Gaussian conditional.
    eye = torch.eye(problem.dim, dtype=torch.float64)
    S = problem.A @ (eye - problem.P.T @ problem.P) @ problem.A.T
    mean = (b['c'].double() @ problem.P) @ problem.A.T
    a, bb = b['a'].double(), b['b'].double()
    cov = a[:, :, None] ** 2 * S + bb[:, :, None] ** 2 * eye
    resid = (b['z_t'].double() - a * mean)[:, :, None]
    post = (bb[:, :, None] * torch.linalg.solve(cov, resid))[:, :, 0]
    mc = (post - b['eps'].double()).pow(2).mean().item()
    assert abs(mc - problem.sparse_floor(b['t']).mean().item()) < 0.02


def test_deterministic_with_seed(lemma1):
    r1 = lemma1.run(steps=30, eval_every=30, seed=5, verbose=False)
    r2 = lemma1.run(steps=30, eval_every=30, seed=5, verbose=False)
    assert r1['history'] == r2['history']


def test_plot_is_written(lemma1, result, tmp_path):
    lemma1.save_plot(result, str(tmp_path / 'p.png'))
    assert (tmp_path / 'p.png').stat().st_size > 1000
