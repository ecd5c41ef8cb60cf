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

from mlattack.attacks.linf_dual import dual_estimate

log = logging.getLogger(__name__)


@dataclass
class LinfLPSolution:
    r: torch.Tensor  # (D,) optimal step (zeros when infeasible)
    t: float  # optimal ||r||_inf (inf when infeasible)
    feasible: bool


def solve_linf_lp(jac: torch.Tensor, delta: torch.Tensor, max_rounds: int = 60) -> LinfLPSolution:
    """Exact solution of ``min ||r||_inf s.t. jac @ r <= delta, |r| <= 1`` for one sample (jac (C, D), delta (C,))."""
    r, t, feasible = solve_linf_lp_batch(jac.unsqueeze(0), delta.unsqueeze(0), max_rounds)
    return LinfLPSolution(r[0].to(jac.dtype), float(t[0]), bool(feasible[0]))


def solve_linf_lp_batch(
    jac: torch.Tensor, delta: torch.Tensor, max_rounds: int = 60
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The LP for K samples at once (jac (K, C, D), delta (K, C)): ``r`` (K, D) float64, ``t`` (K,) and
    ``feasible`` (K,), on jac's device.

    The checks and the dual estimate run batched on the device; only the exact crossover (module docstring) goes
    sample by sample through HiGHS on the host. Numerical failures (non-finite input, HiGHS giving up) yield
    ``feasible=False`` with ``r = 0`` and a warning: the sample gets no step, as when the reference's solver
    returns nothing.
    """
    jac, k, n = jac.detach(), jac.shape[0], jac.shape[2]
    dev = jac.device
    d = delta.detach().double()
    r = torch.zeros(k, n, dtype=torch.float64, device=dev)
    t = torch.zeros(k, dtype=torch.float64, device=dev)
    magnitude = jac.abs()
    norms, rowmax = magnitude.sum(2, dtype=torch.float64), magnitude.amax(2).double()
    del magnitude
    live = norms > 0
    finite = torch.isfinite(norms).all(1) & torch.isfinite(d).all(1)
    # a row 0 <= delta_j < 0 that no step can fix
    infeasible = ~finite | (~live & (d < 0)).any(1)
    scale = torch.where(live, 1.0 / torch.where(live, norms, 1.0), 0.0)  # row scaling keeps the feasible set
    d = d * scale
    # Row generation: start from the violated rows only and add satisfied rows once the step breaks them. A row
    # with slack d_j can only bind once t >= d_j (rows have unit L1 norm), and labels far from their threshold
    # would otherwise sit in the dual beside a row violated by 1e-9 with multipliers 1e9 apart.
    rows = live & (d < 0) & ~infeasible[:, None]
    todo = rows.any(1)
    if not bool(finite.all()):
        log.warning("MLA-LP: non-finite Jacobian or loss gap; no step for the sample(s)")
    j32 = jac.float()
    while bool(todo.any()):
        idx = todo.nonzero().squeeze(1)
        size = (8 * rows[idx].sum(1) + 256).clamp(max=n)
        # a small image fits the first reduced LP whole: the dual estimate would only pick its free set, so its
        # first guess (enough for the scale s0) does (tiny test models: 3x faster)
        lam = torch.empty(idx.numel(), rows.shape[1], dtype=torch.float64, device=dev)
        for whole, rounds in ((size == n, 0), (size < n, 8)):
            if bool(whole.any()):
                sub = idx[whole]
                lam[whole] = dual_estimate(j32[sub], scale[sub], -d[sub], rows[sub], rounds=rounds)
        for pos, i in enumerate(idx.tolist()):  # the crossover: HiGHS on the host, sample by sample
            m = rows[i]
            try:
                ri, ti, jr = _solve_rows(
                    jac[i], scale[i], rowmax[i], m, d[i, m], lam[pos], int(size[pos]), max_rounds
                )
            except (RuntimeError, ValueError) as e:
                log.warning("MLA-LP: %s; no step for this sample (as when the reference's solver fails)", e)
                ri, ti, jr = None, float("inf"), None
            if (
                ri is None or ti > 1.0 + 1e-9
            ):  # a relaxation without a step inside the box: none for the full LP
                infeasible[i], todo[i] = True, False
                continue
            broken = live[i] & ~m & (jr > d[i] + 1e-9 * ti)
            if bool(broken.any()):
                rows[i] |= broken
            else:
                r[i], t[i], todo[i] = ri, ti, False
    r[infeasible] = 0.0
    t[infeasible] = float("inf")
    return r, t, ~infeasible


def _dot_rows(j: torch.Tensor, coef: torch.Tensor, rowmax: torch.Tensor) -> torch.Tensor:
    """``coef^T J`` (D,) float64 for rows ``j`` (C, D) and float64 ``coef`` (C,). Float32 rows (``rowmax``: their
    largest |entry|): one float32 pass, then float64 on the columns whose value lies within that pass's error bound,
    so every sign is float64's (no float64 copy of J). Float64 rows: one float64 pass."""
    if j.dtype == torch.float64:
        return coef @ j
    v = (coef.float() @ j).double()
    bound = 1e-5 * float((coef.abs() * rowmax).sum())  # > (C + 2) 2^-24 sum_j |coef_j J_ji| for C <= 100
    doubt = torch.nonzero(v.abs() <= bound).flatten()
    if doubt.numel():
        v[doubt] = coef @ j[:, doubt].double()
    return v


def _fixed_sum(j: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``J sigma`` (C,) float64 for ``sigma`` in {-1, 0, 1}: the products are exact in J's dtype, the sum float64."""
    return (j * sigma.to(j.dtype)).sum(1, dtype=torch.float64)


def _solve_rows(
    j: torch.Tensor,
    scale: torch.Tensor,
    rowmax: torch.Tensor,
    m: torch.Tensor,
    d: torch.Tensor,
    lam: torch.Tensor,
    size: int,
    max_rounds: int,
) -> tuple[torch.Tensor | None, float, torch.Tensor | None]:
    """Sign-rule crossover (module docstring) on the rows ``m`` of ``scale * j`` (unit L1; ``j`` (C, D) float32 or
    float64, ``scale`` (C,) float64, ``rowmax`` (C,) the largest |entry| of each row of ``j``) from the dual
    estimate ``lam`` (C,). Returns ``(r, t, J r)`` with ``J r`` over all C rows (the broken-row test), or
    ``(None, inf, None)`` when infeasible. J stays in its dtype; every product that decides a sign or enters HiGHS
    is float64 (:func:`_dot_rows`, :func:`_fixed_sum`)."""
    n = j.shape[1]
    rs, jm, lam = scale[m], j[m], lam[m]
    v = _dot_rows(jm, lam * rs, rowmax[m])
    # s = 1/t is solved as s0 * s' with s0 from the dual estimate (weak duality), so HiGHS sees s' ~ 1
    s0 = float(v.abs().sum() / (-(d @ lam)).clamp(min=1e-300))
    free = torch.topk(v.abs(), min(size, n), largest=False).indices
    failures = 0
    for _ in range(max_rounds):
        mask = torch.ones(n, dtype=torch.bool, device=j.device)
        mask[free] = False
        sigma = torch.where(v >= 0, -1.0, 1.0).to(torch.float64) * mask  # fixed coordinates at their bound
        fixed = _fixed_sum(j, sigma) * scale  # all C rows: J r for the broken-row test comes from it
        j_free = jm[:, free].double() * rs[:, None]
        try:
            res = _reduced_lp(j_free.cpu().numpy(), (-fixed[m]).cpu().numpy(), s0 * d.cpu().numpy())
        except (RuntimeError, ValueError):  # numerical trouble in HiGHS: retry on a wider set, then give up
            failures += 1
            if failures > 2:
                raise
            res = None
        if res is None:  # the fixed signs leave no feasible point: widen the free set
            size = min(n, 4 * size)
            free = torch.topk(v.abs(), size, largest=False).indices
            continue
        s, u_free, lam_np = res
        s *= s0
        v = _dot_rows(jm, torch.as_tensor(lam_np, dtype=torch.float64, device=j.device) * rs, rowmax[m])
        # sign rule violated on a fixed coordinate
        bad = mask & (v * sigma > 1e-12 * float(v.abs().max() + 1e-300))
        if not bool(bad.any()):
            if s <= 0:
                return None, float("inf"), None
            t = 1.0 / s
            u_f = torch.as_tensor(u_free, dtype=torch.float64, device=j.device).clamp(-1.0, 1.0)
            u = sigma.clone()
            u[free] = u_f
            jr = (fixed + (j[:, free].double() * scale[:, None]) @ u_f) * t
            return u * t, t, jr
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
