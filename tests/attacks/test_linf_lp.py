"""MLA-LP's structured L-inf LP solver against HiGHS on the full formulation (D + 1 variables)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linprog

from mlattack.attacks import linf_dual, linf_lp
from mlattack.attacks import mlalp_rules as rules
from mlattack.attacks.jacobian import label_jacobian
from mlattack.attacks.linf_crossover import SignCrossover
from mlattack.attacks.linf_lp import solve_linf_lp, solve_linf_lp_batch
from tests.attacks.models import make_cnn, make_images


def highs_full(jac: np.ndarray, delta: np.ndarray):
    """min t over (r, t): J r <= delta, -t <= r_i <= t, |r_i| <= 1, i.e. D + 1 variables, as the reference posed it."""
    c, d = jac.shape
    eye = sp.identity(d)
    col = sp.csr_matrix(np.ones((d, 1)))
    a_ub = sp.vstack(
        [
            sp.hstack([sp.csr_matrix(jac), sp.csr_matrix((c, 1))]),
            sp.hstack([eye, -col]),
            sp.hstack([-eye, -col]),
        ]
    )
    cost = np.zeros(d + 1)
    cost[-1] = 1.0
    b_ub = np.concatenate([delta, np.zeros(2 * d)])
    return linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(-1, 1)] * d + [(0, None)], method="highs")


def loss_jacobian(model, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the (N, C, D) Jacobian of the clamped per-label BCE, as MLA-LP's LP rows."""
    z, jac = label_jacobian(model, x)
    _, dloss = rules.label_losses(z, target, clamp=True)
    return z, jac.flatten(2) * dloss.unsqueeze(-1)


@pytest.fixture(params=["whole", "structured"])
def path(request, monkeypatch) -> str:
    """Both of the solver's paths: small images go to HiGHS whole; "structured" sends them the way of a 448² image
    (dual start on a column subsample, Newton steps, crossover from a small free set)."""
    if request.param == "structured":
        monkeypatch.setattr(linf_lp, "WHOLE", 0)
        monkeypatch.setattr(linf_lp, "FREE", 16)
        monkeypatch.setattr(linf_dual, "SUBSAMPLE", 32)
    return request.param


@pytest.mark.parametrize("seed", range(8))
def test_lp_optimum_equals_highs_on_the_full_formulation(seed: int, path: str) -> None:
    rng = np.random.default_rng(seed)
    c, d = int(rng.integers(3, 21)), int(rng.integers(50, 301))
    jac = rng.normal(size=(c, d)) * (0.1 if seed % 2 else 1.0)
    delta = rng.normal(size=c) * (
        30.0 if seed % 4 == 3 else 2.0
    )  # some instances are infeasible with |r| <= 1
    sol = solve_linf_lp(torch.from_numpy(jac), torch.from_numpy(delta))
    ref = highs_full(jac, delta)
    assert sol.feasible == (ref.status == 0)
    if sol.feasible:
        assert sol.t == pytest.approx(ref.fun, rel=1e-7, abs=1e-9)
        r = sol.r.numpy()
        assert (jac @ r - delta).max() <= 1e-7 and np.abs(r).max() <= sol.t + 1e-9
    else:
        assert ref.status == 2 and torch.count_nonzero(sol.r) == 0


def cnn_lp(seed: int, labels: int = 10, size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """A CNN's float32 loss Jacobian (C, D) and the loss gaps to threshold 0.5 (C,), as MLA-LP poses them."""
    model, x = make_cnn(labels, seed=seed), make_images(1, size, seed=seed)
    target = torch.ones(1, labels)
    z, jac = loss_jacobian(model, x, target)
    delta = rules.threshold_losses(torch.full_like(z, 0.5, dtype=torch.float64), target, True)
    return jac[0], (delta - rules.label_losses(z, target, clamp=True)[0])[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(2))
def test_lp_optimum_equals_highs_on_a_cnn_jacobian(seed: int, dtype: torch.dtype, path: str) -> None:
    """Real network Jacobians are far more degenerate than Gaussian ones (most columns nearly parallel, many tiny);
    they broke an earlier, too coarse dual estimate, so the exact answer is checked on one too. Float32 rows take
    the float32 passes with float64 where a sign is in doubt."""
    jac, delta = cnn_lp(seed)
    r, t, feasible = solve_linf_lp_batch(jac.to(dtype)[None], delta[None])
    ref = highs_full(jac.double().numpy(), delta.numpy())
    assert bool(feasible[0]) == (ref.status == 0)
    if ref.status == 0:
        assert float(t[0]) == pytest.approx(ref.fun, rel=1e-6, abs=1e-9)
        assert float((jac.double() @ r[0] - delta).max()) <= 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_crossover_from_a_poor_start_reaches_the_optimum(seed: int) -> None:
    """The crossover is exact whatever the dual estimate: from random multipliers and a free set of 4 random
    columns it still ends at HiGHS's optimum on the full formulation (after more rounds)."""
    jac, delta = cnn_lp(seed, labels=8, size=16)
    j, n = jac.double(), jac.shape[1]
    scale = n**0.5 / torch.linalg.vector_norm(j, 2, dim=1)
    d = delta * scale
    rows = d < 0
    ref = highs_full(j.numpy(), delta.numpy())
    g = torch.Generator().manual_seed(seed)
    lam = torch.where(rows, torch.rand(len(d), generator=g, dtype=torch.float64), 0.0)
    v = (lam * scale) @ j
    free = torch.randperm(n, generator=g)[:4]
    xo = SignCrossover(j, scale, rows, d, v / float(-(d @ lam)), free)
    sol = xo.run()
    broken = (sol.jr > d + 1e-9 * sol.t) & ~rows
    while bool(broken.any()):  # the row generation of solve_linf_lp_batch
        xo.add_rows(rows | broken)
        rows = xo.m
        sol = xo.run()
        broken = (sol.jr > d + 1e-9 * sol.t) & ~rows
    assert ref.status == 0
    assert sol.t == pytest.approx(ref.fun, rel=1e-7)
    assert xo.cols.numel() > 4  # it did have to free more columns


@pytest.mark.parametrize("neg", [-1e-7, -1e-9, -1e-11])
@pytest.mark.parametrize("seed", range(2))
def test_lp_with_one_barely_violated_row(seed: int, neg: float, path: str) -> None:
    """A label sitting on its threshold (delta ~ -1e-9) beside comfortably satisfied ones, on a CNN Jacobian: the
    multipliers are ~1e9 apart, which once drove the dual estimate out of its domain and the crossover in circles.
    Only that row can bind, so the optimum is known exactly: t = -delta_k / ||J_k||_1, r = t * -sign(J_k)."""
    model, x = make_cnn(20, seed=seed), make_images(1, 32, seed=seed)
    _, jac = loss_jacobian(model, x, torch.ones(1, 20))
    j = jac[0].double()
    delta = torch.ones(20, dtype=torch.float64)
    delta[seed] = neg
    sol = solve_linf_lp(j, delta)
    assert sol.feasible
    assert sol.t == pytest.approx(-neg / float(j[seed].abs().sum()), rel=1e-6)
    assert float((j @ sol.r - delta).max()) <= 1e-6 * abs(neg)


def test_lp_non_finite_input_gives_no_step(path: str) -> None:
    jac = torch.randn(3, 40, dtype=torch.float64)
    jac[1, 5] = float("nan")
    sol = solve_linf_lp(jac, torch.tensor([-0.1, -0.2, 0.3], dtype=torch.float64))
    assert not sol.feasible and torch.count_nonzero(sol.r) == 0


def test_lp_trivial_and_impossible_rows(path: str) -> None:
    jac = torch.randn(3, 40, dtype=torch.float64)
    assert solve_linf_lp(jac, torch.tensor([0.1, 0.0, 2.0], dtype=torch.float64)).t == 0.0
    jac[1] = 0.0  # a label without gradient cannot lower its loss
    sol = solve_linf_lp(jac, torch.tensor([-0.1, -0.2, 0.0], dtype=torch.float64))
    assert not sol.feasible and torch.count_nonzero(sol.r) == 0
    # without its rows (MLA-LP's reference deletes all-zero rows) the LP has none left: no step needed
    assert solve_linf_lp(jac[:0], torch.zeros(0, dtype=torch.float64)).t == 0.0


def test_lp_at_default_sizes_on_a_larger_image(monkeypatch) -> None:
    """An image above ``WHOLE`` takes the default path (2,048-column subsample, ~1,024 free columns) unpatched; it
    equals the whole-image HiGHS solve (the full formulation agreed too, but took 5 minutes at D = 12,288)."""
    jac, delta = cnn_lp(0, labels=12, size=64)
    assert jac.shape[1] > linf_lp.WHOLE
    r, t, feasible = solve_linf_lp_batch(jac[None], delta[None])
    monkeypatch.setattr(linf_lp, "WHOLE", jac.shape[1])
    r_ref, t_ref, feasible_ref = solve_linf_lp_batch(jac[None], delta[None])
    assert bool(feasible[0]) and bool(feasible_ref[0])
    assert float(t[0]) == pytest.approx(float(t_ref[0]), rel=1e-7)
    assert float((jac.double() @ r[0] - delta).max()) <= 1e-9
