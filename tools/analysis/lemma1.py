"""Numerical check of Lemma 1: a dense condition makes VSD collapse to SDS.

Lemma 1 (Section 4.1) says: if the condition ``c`` determines the generator's
latent (``z0 | c = mu(c)``), the auxiliary denoiser's optimum is the sampled
noise itself, ``eps_psi(z_t; t, c) = eps``, so the VSD direction
``eps_phi - eps_psi`` equals the SDS direction ``eps_phi - eps``.

This script trains a small MLP auxiliary denoiser on samples of a fixed
"generator" ``z0 = A u`` (``u ~ N(0, I)``) under two conditions:

* dense:  ``c = u`` (``c`` determines ``z0``; think "the LQ image");
* sparse: ``c = P u`` with ``P`` a 2-row projection (many ``z0`` per ``c``;
  think "an 8x8 colormap").

The teacher ``eps_phi`` is the exact denoiser of a different "real"
distribution, ``N(0, I)``. Noise follows Stable Diffusion's schedule
(scaled-linear betas, 1000 steps) and ``t ~ U[20, 980)`` as in Algorithm 1.
Because everything is linear-Gaussian, the best any denoiser can do in the
sparse case is known in closed form, and is printed as the "floor".

Usage::

    python tools/analysis/lemma1.py --steps 3000 --out work_dirs/lemma1

Prints a table over training, a per-timestep table, and saves
``lemma1.png`` and ``lemma1.json`` in ``--out``.
"""
import argparse
import json
import math
import os
from typing import Dict, List, Tuple

import torch
from torch import nn

T_MIN, T_MAX, NUM_TRAIN_T = 20, 980, 1000


def sd_schedule() -> Tuple[torch.Tensor, torch.Tensor]:
    """Stable Diffusion's ``a_t = sqrt(abar_t)`` and ``b_t = sqrt(1 - abar_t)``.

    Returns:
        Two float64 tensors of length 1000.
    """
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, NUM_TRAIN_T, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    return abar.sqrt(), (1 - abar).sqrt()


class ToyProblem:
    """Generator distribution, conditions and the analytic teacher.

    Args:
        dim: Latent dimension.
        sparse_dim: Dimension of the sparse condition.
        seed: Seed of the fixed generator matrix and projection.
    """

    def __init__(self, dim: int = 8, sparse_dim: int = 2, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        scales = torch.linspace(0.5, 1.5, dim, dtype=torch.float64)
        self.A = q * scales  # z0 = A u; well conditioned, differs from the real N(0, I)
        p, _ = torch.linalg.qr(torch.randn(dim, sparse_dim, generator=g, dtype=torch.float64))
        self.P = p.T  # orthonormal rows: c = P u
        self.dim, self.sparse_dim = dim, sparse_dim
        self.a, self.b = sd_schedule()

    def sample(self, n: int, case: str, gen: torch.Generator) -> Dict[str, torch.Tensor]:
        """Draw generator outputs, their condition, a timestep, noise and ``z_t``.

        Args:
            n: Batch size.
            case: ``'dense'`` or ``'sparse'``.
            gen: Random generator.

        Returns:
            Dict with float32 ``z_t``, ``c``, ``eps``, ``t`` (int64) and ``a``, ``b`` (``(n, 1)``).
        """
        u = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        z0 = u @ self.A.T
        c = u if case == 'dense' else u @ self.P.T
        t = torch.randint(T_MIN, T_MAX, (n,), generator=gen)
        eps = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        a, b = self.a[t, None], self.b[t, None]
        return dict(z_t=(a * z0 + b * eps).float(), c=c.float(), eps=eps.float(), t=t,
                    a=a.float(), b=b.float())

    def teacher(self, z_t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Exact denoiser of the "real" distribution ``N(0, I)``: ``b z_t / (a^2 + b^2)``."""
        return b * z_t / (a ** 2 + b ** 2)

    def sparse_floor(self, t: torch.Tensor) -> torch.Tensor:
        """Per-sample minimum ``E||E[eps | z_t, c] - eps||^2 / dim`` in the sparse case.

        ``z0 | c ~ N(A P^T c, S)`` with ``S = A (I - P^T P) A^T``, so
        ``E[eps | z_t, c] = b (a^2 S + b^2 I)^-1 (z_t - a mean)`` and the error
        is ``tr(I - b^2 (a^2 S + b^2 I)^-1) / dim``.

        Args:
            t: Timesteps ``(n,)``.

        Returns:
            ``(n,)`` float64 mean squared error per dimension.
        """
        eye = torch.eye(self.dim, dtype=torch.float64)
        S = self.A @ (eye - self.P.T @ self.P) @ self.A.T
        a, b = self.a[t], self.b[t]
        cov = a[:, None, None] ** 2 * S + b[:, None, None] ** 2 * eye
        tr = torch.diagonal(torch.linalg.inv(cov), dim1=1, dim2=2).sum(-1)
        return (self.dim - b ** 2 * tr) / self.dim


class AuxDenoiser(nn.Module):
    """Small MLP ``eps_psi(z_t; t, c)`` with a sinusoidal timestep embedding.

    Args:
        dim: Latent dimension.
        cond_dim: Condition dimension.
        hidden: Width of the hidden layers.
    """

    def __init__(self, dim: int, cond_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.freqs = torch.exp(torch.linspace(0, math.log(200.0), 8))
        self.net = nn.Sequential(
            nn.Linear(dim + cond_dim + 16, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, dim))

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Predict the noise.

        Args:
            z_t: ``(n, dim)`` noisy latents.
            t: ``(n,)`` integer timesteps.
            c: ``(n, cond_dim)`` conditions.

        Returns:
            ``(n, dim)`` noise prediction.
        """
        ang = (t.float()[:, None] / NUM_TRAIN_T) * self.freqs[None]
        emb = torch.cat([ang.sin(), ang.cos()], dim=1)
        return self.net(torch.cat([z_t, c, emb], dim=1))


def evaluate(model: AuxDenoiser, problem: ToyProblem, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Distance of ``eps_psi`` to ``eps`` and cosine between VSD and SDS directions.

    Args:
        model: The auxiliary denoiser.
        problem: The toy problem (for the teacher).
        batch: A fixed evaluation batch from :meth:`ToyProblem.sample`.

    Returns:
        ``err`` (RMS of ``eps_psi - eps`` per dimension) and ``cos`` (mean
        per-sample cosine of ``eps_phi - eps_psi`` and ``eps_phi - eps``).
    """
    with torch.no_grad():
        eps_psi = model(batch['z_t'], batch['t'], batch['c'])
        eps_phi = problem.teacher(batch['z_t'], batch['a'], batch['b'])
        g_vsd, g_sds = eps_phi - eps_psi, eps_phi - batch['eps']
        err = (eps_psi - batch['eps']).pow(2).mean().sqrt().item()
        cos = nn.functional.cosine_similarity(g_vsd, g_sds, dim=1).mean().item()
    return dict(err=err, cos=cos)


def per_timestep(model: AuxDenoiser, problem: ToyProblem, batch: Dict[str, torch.Tensor],
                 case: str, edges: Tuple[int, ...] = (20, 250, 500, 750, 980)) -> List[Dict[str, float]]:
    """Error, cosine and analytic floor in timestep bins.

    Args:
        model: The trained auxiliary denoiser.
        problem: The toy problem.
        batch: Evaluation batch.
        case: ``'dense'`` (floor 0) or ``'sparse'``.
        edges: Bin edges over ``t``.

    Returns:
        One dict per bin with ``t_lo``, ``t_hi``, ``err``, ``cos``, ``floor``.
    """
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        m = (batch['t'] >= lo) & (batch['t'] < hi)
        sub = {k: v[m] for k, v in batch.items()}
        stats = evaluate(model, problem, sub)
        floor = 0.0 if case == 'dense' else problem.sparse_floor(sub['t']).mean().sqrt().item()
        rows.append(dict(t_lo=lo, t_hi=hi, floor=floor, **stats))
    return rows


def run(steps: int = 3000, batch_size: int = 256, eval_every: int = 250, seed: int = 0,
        lr: float = 2e-3, verbose: bool = True) -> Dict[str, object]:
    """Train one auxiliary denoiser per case and record the collapse diagnostics.

    Args:
        steps: Optimisation steps per case.
        batch_size: Training batch size.
        eval_every: Evaluate every this many steps (and at the end).
        seed: Seed of everything (problem, data, initialisation).
        lr: AdamW learning rate (cosine-decayed to zero).
        verbose: Print the tables.

    Returns:
        Dict with ``history`` (per case: list of ``{step, err, cos}``),
        ``bins`` (per case: per-timestep rows), ``floor`` (overall sparse floor).
    """
    problem = ToyProblem(seed=seed)
    eval_batch = {c: problem.sample(4096, c, torch.Generator().manual_seed(seed + 1))
                  for c in ('dense', 'sparse')}
    history: Dict[str, List[Dict[str, float]]] = {}
    bins: Dict[str, List[Dict[str, float]]] = {}
    for i, case in enumerate(('dense', 'sparse')):
        torch.manual_seed(seed + 10 + i)
        gen = torch.Generator().manual_seed(seed + 100 + i)
        cond_dim = problem.dim if case == 'dense' else problem.sparse_dim
        model = AuxDenoiser(problem.dim, cond_dim)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        history[case] = [dict(step=0, **evaluate(model, problem, eval_batch[case]))]
        for step in range(1, steps + 1):
            b = problem.sample(batch_size, case, gen)
            loss = (model(b['z_t'], b['t'], b['c']) - b['eps']).pow(2).mean()  # Eq. 10
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if step % eval_every == 0 or step == steps:
                history[case].append(dict(step=step, **evaluate(model, problem, eval_batch[case])))
        bins[case] = per_timestep(model, problem, eval_batch[case], case)
    floor = problem.sparse_floor(eval_batch['sparse']['t']).mean().sqrt().item()
    result = dict(history=history, bins=bins, floor=floor, seed=seed, steps=steps)
    if verbose:
        print_tables(result)
    return result


def print_tables(result: Dict[str, object]) -> None:
    """Print the training table and the per-timestep table.

    Args:
        result: Output of :func:`run`.
    """
    hist = result['history']
    print('||eps_psi - eps|| (RMS per dim) and cos(VSD grad, SDS grad) during training')
    print(f'{"step":>6} | {"dense err":>9} {"dense cos":>9} | {"sparse err":>10} {"sparse cos":>10}')
    for d, s in zip(hist['dense'], hist['sparse']):
        print(f'{d["step"]:>6} | {d["err"]:9.4f} {d["cos"]:9.4f} | {s["err"]:10.4f} {s["cos"]:10.4f}')
    print(f'sparse-case floor (best possible err, closed form): {result["floor"]:.4f}; dense floor: 0')
    print('\nafter training, by timestep')
    print(f'{"t":>9} | {"dense err":>9} {"dense cos":>9} | '
          f'{"sparse err":>10} {"floor":>6} {"sparse cos":>10}')
    for d, s in zip(result['bins']['dense'], result['bins']['sparse']):
        print(f'{d["t_lo"]:>4}-{d["t_hi"]:<4} | {d["err"]:9.4f} {d["cos"]:9.4f} | '
              f'{s["err"]:10.4f} {s["floor"]:6.3f} {s["cos"]:10.4f}')


def save_plot(result: Dict[str, object], path: str) -> None:
    """Save error and cosine curves of both cases.

    Args:
        result: Output of :func:`run`.
        path: PNG file to write.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for case, colour in (('dense', 'tab:red'), ('sparse', 'tab:blue')):
        h = result['history'][case]
        steps = [r['step'] for r in h]
        axes[0].plot(steps, [r['err'] for r in h], color=colour, label=f'{case} condition')
        axes[1].plot(steps, [r['cos'] for r in h], color=colour, label=f'{case} condition')
    axes[0].axhline(result['floor'], color='tab:blue', ls='--', lw=1, label='sparse floor (closed form)')
    axes[0].set(xlabel='training step', ylabel='RMS ||eps_psi - eps||', yscale='log',
                title='auxiliary denoiser vs sampled noise')
    axes[1].set(xlabel='training step', ylabel='cosine', title='cos(VSD grad, SDS grad)')
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--steps', type=int, default=3000, help='training steps per case')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--eval-every', type=int, default=250)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default='work_dirs/lemma1', help='folder for lemma1.png / lemma1.json')
    return p.parse_args()


def main() -> None:
    """Run the experiment, print the tables and save the plot and JSON."""
    args = parse_args()
    result = run(args.steps, args.batch_size, args.eval_every, args.seed)
    os.makedirs(args.out, exist_ok=True)
    save_plot(result, os.path.join(args.out, 'lemma1.png'))
    with open(os.path.join(args.out, 'lemma1.json'), 'w') as f:
        json.dump(result, f, indent=1)
    print(f'\nsaved {os.path.join(args.out, "lemma1.png")} and lemma1.json')


if __name__ == '__main__':
    main()
