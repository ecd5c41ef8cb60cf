"""MLA-LP: the structured L-inf LP solver against HiGHS on the full formulation, and the attack's invariants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linprog

from mlattack.attacks import MLALP
from mlattack.attacks.linf_lp import solve_linf_lp
from mlattack.attacks.mlalp import per_label_bce
from tests.attacks.models import assert_batch_equals_one_by_one, make_cnn, make_images, make_linear


def _highs_full(jac: np.ndarray, delta: np.ndarray):
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


@pytest.mark.parametrize("seed", range(8))
def test_lp_optimum_equals_highs_on_the_full_formulation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c, d = int(rng.integers(3, 21)), int(rng.integers(50, 301))
    jac = rng.normal(size=(c, d)) * (0.1 if seed % 2 else 1.0)
    delta = rng.normal(size=c) * (
        30.0 if seed % 4 == 3 else 2.0
    )  # some instances are infeasible with |r| <= 1
    sol = solve_linf_lp(torch.from_numpy(jac), torch.from_numpy(delta))
    ref = _highs_full(jac, delta)
    assert sol.feasible == (ref.status == 0)
    if sol.feasible:
        assert sol.t == pytest.approx(ref.fun, rel=1e-7, abs=1e-9)
        r = sol.r.numpy()
        assert (jac @ r - delta).max() <= 1e-7 and np.abs(r).max() <= sol.t + 1e-9
    else:
        assert ref.status == 2 and torch.count_nonzero(sol.r) == 0


@pytest.mark.parametrize("seed", range(2))
def test_lp_optimum_equals_highs_on_a_cnn_jacobian(seed: int) -> None:
    """Real network Jacobians are far more degenerate than Gaussian ones (most columns nearly parallel, many tiny);
    they broke an earlier, too coarse dual estimate, so the exact answer is checked on one too."""
    model, x = make_cnn(10, seed=seed), make_images(1, 20, seed=seed)
    target = torch.ones(1, 10)
    z, jac = MLALP()._jacobian(model, x, target)
    delta = per_label_bce(torch.zeros_like(z), target) - per_label_bce(z, target)
    sol = solve_linf_lp(jac[0].double(), delta[0].double())
    ref = _highs_full(jac[0].double().numpy(), delta[0].double().numpy())
    assert sol.feasible == (ref.status == 0)
    if sol.feasible:
        assert sol.t == pytest.approx(ref.fun, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("neg", [-1e-7, -1e-9, -1e-11])
@pytest.mark.parametrize("seed", range(2))
def test_lp_with_one_barely_violated_row(seed: int, neg: float) -> None:
    """A label sitting on its threshold (delta ~ -1e-9) beside comfortably satisfied ones, on a CNN Jacobian: the
    multipliers are ~1e9 apart, which once drove the dual estimate out of its domain and the crossover in circles.
    Only that row can bind, so the optimum is known exactly: t = -delta_k / ||J_k||_1, r = t * -sign(J_k)."""
    model, x = make_cnn(20, seed=seed), make_images(1, 32, seed=seed)
    _, jac = MLALP()._jacobian(model, x, torch.ones(1, 20))
    j = jac[0].double()
    delta = torch.ones(20, dtype=torch.float64)
    delta[seed] = neg
    sol = solve_linf_lp(j, delta)
    assert sol.feasible
    assert sol.t == pytest.approx(-neg / float(j[seed].abs().sum()), rel=1e-6)
    assert float((j @ sol.r - delta).max()) <= 1e-6 * abs(neg)


def test_lp_non_finite_input_gives_no_step() -> None:
    jac = torch.randn(3, 40, dtype=torch.float64)
    jac[1, 5] = float("nan")
    sol = solve_linf_lp(jac, torch.tensor([-0.1, -0.2, 0.3], dtype=torch.float64))
    assert not sol.feasible and torch.count_nonzero(sol.r) == 0


def test_lp_trivial_and_impossible_rows() -> None:
    jac = torch.randn(3, 40, dtype=torch.float64)
    assert solve_linf_lp(jac, torch.tensor([0.1, 0.0, 2.0], dtype=torch.float64)).t == 0.0
    jac[1] = 0.0  # a label without gradient cannot lower its loss
    sol = solve_linf_lp(jac, torch.tensor([-0.1, -0.2, 0.0], dtype=torch.float64))
    assert not sol.feasible and torch.count_nonzero(sol.r) == 0


def test_one_lp_step_lowers_the_loss_and_the_attack_keeps_range() -> None:
    model, x = make_linear(4, 5, scale=2.0), 0.25 + 0.5 * make_images(2, 5)
    target = torch.ones(2, 4)
    attack = MLALP(max_iter=4)
    z, jac = attack._jacobian(model, x, target)
    loss = per_label_bce(z, target)
    delta = per_label_bce(torch.zeros_like(z), target) - loss  # threshold 0.5 on every label
    for i in range(2):
        sol = solve_linf_lp(jac[i], delta[i])
        assert sol.feasible and 0 < sol.t <= 1
        step = (x[i] + sol.r.view_as(x[i])).clamp(0, 1)
        assert per_label_bce(model(step[None]), target[i : i + 1]).sum() < loss[i].sum()
    res = attack.run(model, x, target)
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert ((res.adv - x).abs().amax(dim=(1, 2, 3)) <= 4.0 + 1e-6).all()
    assert (res.iterations >= 1).all() and (res.iterations <= 4).all()


def test_batch_equals_one_by_one_and_deterministic() -> None:
    model, x = make_cnn(3), make_images(2, 5, seed=3)
    target = torch.tensor([[1.0, 1, 1], [1, 0, 1]])
    assert_batch_equals_one_by_one(MLALP(max_iter=2), model, x, target)


@pytest.mark.parametrize("num_classes", [1, 6])
def test_any_class_count(num_classes: int) -> None:
    model, x = make_cnn(num_classes), make_images(1, 5)
    res = MLALP(max_iter=1).run(model, x, torch.ones(1, num_classes))
    assert res.adv.shape == x.shape and res.loss.shape == (1,)
