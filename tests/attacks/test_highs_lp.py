"""The HiGHS model kept between solves (MLA-LP's reduced LP) against scipy's linprog on the same LP."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from mlattack.attacks.highs_lp import ReducedLP


def reference(a: np.ndarray, d: np.ndarray, b: np.ndarray):
    """max s s.t. a u - s d <= b, |u| <= 1, by linprog from scratch."""
    m = a.shape[1]
    cost = np.r_[np.zeros(m), -1.0]
    return linprog(cost, A_ub=np.hstack([a, -d[:, None]]), b_ub=b, bounds=[(-1, 1)] * m + [(None, None)])


def random_lp(rng: np.random.Generator, c: int, m: int):
    a = rng.normal(size=(c, m))
    d = -np.abs(rng.normal(size=c))
    d[-2:] = np.abs(rng.normal(size=2))  # satisfied rows, as the row generation adds them
    return a, d, rng.normal(size=c)


@pytest.mark.parametrize("seed", range(6))
def test_warm_solves_equal_linprog(seed: int) -> None:
    """Columns, rows and right-hand sides change between solves of one model; each solve equals a cold linprog
    (optimum, feasibility and the row multipliers), whatever unit of s HiGHS is given."""
    rng = np.random.default_rng(seed)
    c, m = int(rng.integers(4, 21)), int(rng.integers(30, 400))
    a, d, b = random_lp(rng, c, m)
    k = m // 3
    lp = ReducedLP(d[:-2], s_unit=[1.0, 10.0 ** rng.uniform(-3, 3)][seed % 2], weight=m)
    steps = [
        (lambda: lp.add_columns(a[:-2, :k]), a[:-2, :k], d[:-2], b[:-2]),
        (lambda: lp.add_columns(a[:-2, k:]), a[:-2], d[:-2], b[:-2] - 0.5),
        (lambda: lp.add_rows(a[-2:], d[-2:]), a, d, b),
    ]
    for change, aa, dd, bb in steps:
        change()
        lp.set_rhs(bb)
        got, ref = lp.solve(), reference(aa, dd, bb)
        if ref.status == 2:
            assert got is None
            continue
        assert ref.status == 0 and got is not None
        s, u, y = got
        assert s == pytest.approx(ref.x[-1], rel=1e-9, abs=1e-9)
        assert np.abs(u).max() <= 1 + 1e-9
        assert (aa @ u - s * dd - bb).max() <= 1e-8
        assert np.allclose(y, -ref.ineqlin.marginals, rtol=1e-6, atol=1e-9)


def test_infeasible_reduced_lp_is_none() -> None:
    """Fixed signs can leave no feasible point: a satisfied row (d > 0) that s cannot relax enough."""
    a = np.array([[1.0, 1.0], [1.0, -1.0]])
    lp = ReducedLP(np.array([-1.0, 1.0]))
    lp.add_columns(a)
    lp.set_rhs(np.array([0.0, -10.0]))  # row 0 caps s near 2; row 1 needs s >= 8
    assert lp.solve() is None


def test_add_rows_checks_the_column_count() -> None:
    lp = ReducedLP(np.array([-1.0]))
    lp.add_columns(np.ones((1, 3)))
    with pytest.raises(ValueError):
        lp.add_rows(np.ones((1, 2)), np.array([1.0]))


def test_the_solver_prints_nothing_into_an_attacks_output():
    """HiGHS prints a banner from C++ at its first construction in a process; an attack's progress display and
    table must not be interleaved with it."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from mlattack.attacks.linf_lp import solve_linf_lp\n"
        "s = solve_linf_lp(torch.randn(5, 3000, generator=torch.Generator().manual_seed(0)), -0.1 * torch.ones(5))\n"
        "print('t', s.feasible)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "t True\n", done.stdout
