"""The linear program of MLA-LP, solved exactly using its structure (C general rows, D box-bounded variables).

    min_r ||r||_inf   s.t.   J r <= delta,   |r_i| <= 1          (J: C x D, C labels, D = 3·H·W pixels)

With ``r = u / s`` (``t = 1/s``) this is the LP  ``max s  s.t.  J u - s·delta <= 0,  -1 <= u <= 1`` whose box rows
are plain variable bounds. Its dual has C variables: ``t* = 1 / min { ||J^T lam||_1 : lam >= 0, -delta^T lam = 1 }``,
and at the optimum every coordinate with ``(J^T lam)_i != 0`` sits at its bound ``u_i = -sign((J^T lam)_i)``; at
most C coordinates are strictly inside. Two stages use that:

1. **Dual estimate** (C variables): Newton's method on the smoothed dual ``sum_i sqrt((J^T lam)_i^2 + eps^2)`` with
   a log barrier for ``lam >= 0`` and the equality constraint, ``eps`` and the barrier weight driven towards 0.
   Each step costs one ``J diag(w) J^T`` product (O(C^2 D)); no D x D matrix is formed.
2. **Exact crossover**: fix ``u_i = -sign((J^T lam)_i)`` outside a small set F of the coordinates with the smallest
   ``|J^T lam|``, solve that reduced LP (|F| + 1 variables, C rows) with HiGHS, and check the optimality condition
   (the sign rule with the reduced LP's own multipliers) on all D coordinates; violators join F and we repeat.
   When no coordinate violates it, the reduced optimum is a KKT point of the full LP: the same optimum as HiGHS on
   the full formulation (checked in tests), at the cost of a few forward passes at 448².

Both run inside a row generation loop: first only the rows the step must fix (``delta_j < 0``), then satisfied rows
that the step breaks (at most C rounds; usually one). Labels far from their threshold cannot bind a small step, and
leaving them out keeps the dual well scaled when one label sits a hair's breadth off its threshold.

Infeasible case (no ``|r_i| <= 1`` satisfies ``J r <= delta``, i.e. ``t* > 1``): reported as ``feasible=False`` with
``r = 0``, as the study's code does when its solver finds no optimal solution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog

log = logging.getLogger(__name__)


@dataclass
class LinfLPSolution:
    r: torch.Tensor  # (D,) optimal step (zeros when infeasible)
    t: float  # optimal ||r||_inf (inf when infeasible)
    feasible: bool


def _dual_estimate(
    j: torch.Tensor, g: torch.Tensor, rounds: int = 8, newton: int = 4, shrink: float = 0.1
) -> torch.Tensor:
    """Approximate argmin of ||J^T lam||_1 over {lam >= 0, g^T lam = 1} (smoothed, barrier, Newton).

    Only a warm start, but the crossover is cheap only when few signs of ``J^T lam`` are wrong: on real ResNet
    Jacobians 6 x 2 Newton steps left ~20k of 150k signs wrong (40 % error in lam, 44k-column HiGHS solves), while
    8 x 4 steps reach ~1e-5 and a handful of wrong signs. The Hessian (the O(C^2 D) cost) is formed in float32:
    it only steers Newton, the gradient and objective stay float64.
    """
    j32 = j.float()
    pos = g > 0
    eta = min(1.0, 0.5 * float(g[pos].sum()) / (float(-g[~pos].sum()) + 1e-30)) if bool((~pos).any()) else 1.0
    lam = torch.where(pos, torch.ones_like(g), torch.full_like(g, eta))
    lam = start = lam / (g @ lam)
    v = lam @ j
    eps = float(v.abs().mean()) + 1e-30
    mu = float(v.abs().sum()) * 1e-2 / len(g)
    kkt = torch.zeros(len(g) + 1, len(g) + 1, dtype=j.dtype, device=j.device)
    rhs = torch.zeros(len(g) + 1, dtype=j.dtype, device=j.device)

    def objective(v_: torch.Tensor, lam_: torch.Tensor) -> float:
        return float(torch.sqrt(v_ * v_ + eps * eps).sum() - mu * lam_.log().sum())

    for _ in range(rounds):
        for _ in range(newton):
            phi = torch.sqrt(v * v + eps * eps)
            grad = j @ (v / phi) - mu / lam
            # curvature eps^2/phi^3 is negligible where |v| >> eps: late rounds touch only a few coordinates
            near = (v.abs() < 30 * eps).nonzero().squeeze(1)
            stride = max(1, near.numel() // 16384)  # early rounds: a strided sample steers Newton as well
            near = near[::stride]
            w = (eps * eps * stride / phi[near] ** 3).float()
            jn = j32.index_select(1, near)  # the same gather as j32[:, near], without advanced indexing
            kkt[:-1, :-1] = ((jn * w) @ jn.T).double() + torch.diag(mu / lam**2)
            kkt[:-1, -1], kkt[-1, :-1] = g, g
            rhs[:-1] = -grad
            step = torch.linalg.lstsq(kkt, rhs).solution[:-1]
            slope, phi_sum = float(grad @ step), phi.sum()
            if -slope < 1e-12 * float(phi_sum):  # Newton decrement: this round has converged
                break
            dv = step @ j
            neg = step < 0
            alpha = min(1.0, 0.99 * float((-lam[neg] / step[neg]).min())) if bool(neg.any()) else 1.0
            f0 = float(phi_sum - mu * lam.log().sum())  # objective(v, lam): phi is its smoothed |v|
            # "not <=" also rejects NaN: on near-degenerate rows (a delta of -1e-7 next to O(1) ones) a step can
            # leave the domain of the log barrier through round-off
            while (
                alpha > 1e-12
                and not objective(v + alpha * dv, lam + alpha * step) <= f0 + 1e-4 * alpha * slope
            ):
                alpha *= 0.5
            new = lam + alpha * step
            scale = float(g @ new)  # stay on the constraint despite round-off
            if alpha <= 1e-12 or not scale > 0 or not bool((new > 0).all()):
                break  # no safe progress at this smoothing level
            lam, v = new / scale, (v + alpha * dv) / scale
        eps *= shrink
        mu *= shrink
    # only a warm start: anything unusable falls back to the first guess (the crossover stays exact either way)
    return lam if bool(torch.isfinite(lam).all()) else start


def solve_linf_lp(jac: torch.Tensor, delta: torch.Tensor, max_rounds: int = 60) -> LinfLPSolution:
    """Exact solution of ``min ||r||_inf s.t. jac @ r <= delta, |r| <= 1`` for one sample (jac (C, D), delta (C,)).

    Numerical failures (non-finite input, HiGHS giving up) yield ``feasible=False`` with ``r = 0`` and a warning:
    the sample gets no step, as when the reference's solver returns nothing.
    """
    dev, dtype = jac.device, jac.dtype
    j = jac.detach().double()
    d = delta.detach().double()
    n = j.shape[1]
    infeasible = LinfLPSolution(torch.zeros(n, dtype=dtype, device=dev), float("inf"), False)
    if not (bool(torch.isfinite(j).all()) and bool(torch.isfinite(d).all())):
        log.warning("MLA-LP: non-finite Jacobian or loss gap; no step for this sample")
        return infeasible
    norms = j.abs().sum(1)
    live = norms > 0
    if bool((~live & (d < 0)).any()):  # a row 0 <= delta_j < 0 that no step can fix
        return infeasible
    j, d = j[live] / norms[live, None], d[live] / norms[live]  # row scaling keeps the feasible set
    if j.shape[0] == 0 or bool((d >= 0).all()):
        return LinfLPSolution(torch.zeros(n, dtype=dtype, device=dev), 0.0, True)
    # Row generation: start from the violated rows only and add satisfied rows once the step breaks them. A row
    # with slack d_j can only bind once t >= d_j (rows have unit L1 norm), and labels far from their threshold
    # would otherwise sit in the dual beside a row violated by 1e-9 with multipliers 1e9 apart.
    rows = d < 0
    while True:
        try:
            r, t = _solve_rows(j[rows], d[rows], max_rounds)
        except (RuntimeError, ValueError) as e:
            log.warning("MLA-LP: %s; no step for this sample (as when the reference's solver fails)", e)
            return infeasible
        if r is None or t > 1.0 + 1e-9:  # a relaxation without a step inside the box: none for the full LP
            return infeasible
        broken = ~rows & (j @ r > d + 1e-9 * t)
        if not bool(broken.any()):
            return LinfLPSolution(r.to(dtype), t, True)
        rows |= broken


def _solve_rows(j: torch.Tensor, d: torch.Tensor, max_rounds: int) -> tuple[torch.Tensor | None, float]:
    """Dual estimate + sign-rule crossover (module docstring) for unit-L1 rows; (None, inf) when infeasible."""
    n = j.shape[1]
    size = min(n, 8 * j.shape[0] + 256)
    # a small image fits the first reduced LP whole: the dual estimate would only pick its free set, so its
    # first guess (enough for the scale s0) does (tiny test models: 3x faster)
    lam = _dual_estimate(j, -d, rounds=0 if size == n else 8)
    v = lam @ j
    # s = 1/t is solved as s0 * s' with s0 from the dual estimate (weak duality), so HiGHS sees s' ~ 1
    s0 = float(v.abs().sum() / (-(d @ lam)).clamp(min=1e-300))
    free = torch.argsort(v.abs())[:size]
    failures = 0
    for _ in range(max_rounds):
        mask = torch.ones(n, dtype=torch.bool, device=j.device)
        mask[free] = False
        sigma = torch.where(v >= 0, -1.0, 1.0).to(j.dtype) * mask  # fixed coordinates at their bound
        try:
            res = _reduced_lp(j[:, free].cpu().numpy(), (-(j @ sigma)).cpu().numpy(), s0 * d.cpu().numpy())
        except (RuntimeError, ValueError):  # numerical trouble in HiGHS: retry on a wider set, then give up
            failures += 1
            if failures > 2:
                raise
            res = None
        if res is None:  # the fixed signs leave no feasible point: widen the free set
            size = min(n, 4 * size)
            free = torch.argsort(v.abs())[:size]
            continue
        s, u_free, lam = res
        s *= s0
        lam_t = torch.as_tensor(lam, dtype=j.dtype, device=j.device)
        v = lam_t @ j
        # sign rule violated on a fixed coordinate
        bad = mask & (v * sigma > 1e-12 * float(v.abs().max() + 1e-300))
        if not bool(bad.any()):
            if s <= 0:
                return None, float("inf")
            t = 1.0 / s
            u = sigma.clone()
            u[free] = torch.as_tensor(u_free, dtype=j.dtype, device=j.device)
            return (u * t).clamp(-t, t), t
        free = torch.cat([free, torch.nonzero(bad).flatten()])
    raise RuntimeError("the sign-rule crossover did not converge")


def _reduced_lp(j_free: np.ndarray, b: np.ndarray, d: np.ndarray):
    """max s s.t. J_F u_F - s d <= b, |u_F| <= 1. Returns (s, u_F, row multipliers >= 0) or None if infeasible."""
    m = j_free.shape[1]
    c = np.zeros(m + 1)
    c[-1] = -1.0
    a = np.hstack([j_free, -d[:, None]])
    bounds = [(-1.0, 1.0)] * m + [(None, None)]
    res = linprog(c, A_ub=a, b_ub=b, bounds=bounds, method="highs")
    if res.status == 2:
        return None
    if res.status != 0:
        raise RuntimeError(f"solve_linf_lp: HiGHS failed on the reduced LP: {res.message}")
    return float(res.x[-1]), res.x[:-1], -res.ineqlin.marginals
