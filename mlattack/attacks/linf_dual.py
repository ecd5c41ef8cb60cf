"""The dual start of MLA-LP's L-inf LP (stage 1 of :mod:`mlattack.attacks.linf_lp`), one sample at a time.

With the LP's rows scaled (``A = scale * J``, C x D) and ``g = -delta`` (scaled) the dual is

    min f(lam) = ||A^T lam||_1   over   {lam >= 0 on the LP's rows, 0 elsewhere;  g^T lam = 1},

a least-absolute-deviations problem with C parameters and D observations. Its optimum fixes the sign of every
coordinate of the step; the crossover (stage 2) only needs the signs right outside a small free set, i.e. ``lam``
close enough that few ``(A^T lam)_i`` change sign on the way to the optimum. Two cheap stages get there:

1. **Subsample**: the exact LP on every ``D / SUBSAMPLE``-th column (HiGHS, a few ms): f within ~0.5 %, but
   ~15,000 of 602,112 signs wrong on the mimic's LPs (``benchmarks/mlalp_host.py``).
2. **Kink Newton**: with D ~ 6e5 kinks, f is smooth at any scale above their spacing, its curvature
   ``sum_i 2 delta((A^T lam)_i) a_i a_i^T`` estimated by the columns within ``eps`` of their kink
   (``sum a_i a_i^T / eps``). Each step: the exact subgradient ``A sign(A^T lam)`` (one pass over J), that curvature
   (a gather of a few thousand columns), a C-dimensional QP for ``lam >= 0`` and ``g^T lam = 1``, the step checked
   on f (one pass, which is also the next step's ``A^T lam``); ``eps`` follows the step's size on those columns.
   On the mimic's LPs, 3 steps leave 30-100 signs wrong, all among the ~400 columns nearest their kink.

The subgradient pass also gives ``J u`` for the estimated step ``u = -sign(A^T lam) / f``: rows that step would
break join the LP here, before the crossover (row generation ahead of time).

The result is only a warm start: the crossover is exact whatever it is (a poor start costs a larger free set).
It replaces a batched smoothed-Newton estimate (8 rounds x 4 steps, each several passes over J and the (K, D)
vectors: ~1.6 s per 448² LP on the mimic against ~40 ms for this one); it ran batched on the device, this runs
per sample with one host sync per step, which on a GPU still costs far less than those passes.
"""

from __future__ import annotations

import numpy as np
import torch

from mlattack.attacks.highs_lp import ReducedLP

#: columns of the strided subsample whose exact LP starts the estimate
SUBSAMPLE = 2048
#: kink Newton steps at most (each: two passes over J)
NEWTON_STEPS = 3
#: columns that estimate the curvature at most (evenly spaced among those near their kink)
HESSIAN_COLUMNS = 2048
#: stop once a step lowers f by less than this fraction
RELATIVE_DECREASE = 1e-7


def dual_start(
    j: torch.Tensor, scale: torch.Tensor, d: torch.Tensor, rows: torch.Tensor, eligible: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Approximate dual multipliers ``lam`` (C,) float64 (zero outside the rows, ``-d^T lam = 1``) of the LP with
    rows ``scale * j`` (``j`` (C, D) float32 or float64, ``scale`` (C,) float64), scaled gaps ``d`` (C,) and the
    LP's rows ``rows`` (C,) bool; ``(scale * lam)^T j`` (D,) in j's dtype, the values that rank the columns; and
    the rows, grown by the ``eligible`` rows that the step would break (row generation ahead of the crossover: each
    Newton step's subgradient pass also gives ``J u`` for the step ``u = -sign(A^T lam) / f``)."""
    g = torch.where(rows, -d, torch.zeros_like(d))
    lam = _subsample_start(j, scale, d, rows, g)
    return _kink_newton(j, scale, d, rows.clone(), eligible, lam)


def _values(j: torch.Tensor, scale: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``(scale * lam)^T j`` (D,) in j's dtype: one pass over J."""
    return (lam * scale).to(j.dtype) @ j


def _subsample_start(
    j: torch.Tensor, scale: torch.Tensor, d: torch.Tensor, rows: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    """The row multipliers of the LP restricted to a strided subsample of the columns (an unbiased sample of the
    dual objective's terms), normalised to ``g^T lam = 1``; the first guess of a uniform ``lam`` if that fails."""
    n = j.shape[1]
    cols = torch.arange(0, n, max(1, n // SUBSAMPLE), device=j.device)
    guess = torch.where(rows & (g > 0), 1.0, 0.0).to(torch.float64)
    guess = guess / (g @ guess).clamp(min=1e-300)
    if int(rows.sum()) == 1:  # one row: g^T lam = 1 fixes lam
        return guess
    a = j[:, cols].double() * scale[:, None]
    s0 = float((guess @ a).abs().sum())  # weak duality: the subsample's s is at most this (HiGHS sees ~1)
    lp = ReducedLP(d[rows].cpu().numpy(), s_unit=s0 if 0 < s0 < float("inf") else 1.0, weight=cols.numel())
    lp.add_columns(a[rows].cpu().numpy())
    try:
        res = lp.solve()
    except RuntimeError:
        return guess
    if res is None:
        return guess
    lam = torch.zeros_like(g)
    lam[rows] = torch.as_tensor(res[2], dtype=torch.float64, device=g.device)
    norm = float(g @ lam)
    return lam / norm if norm > 0 and bool(torch.isfinite(lam).all()) else guess


def _kink_newton(
    j: torch.Tensor,
    scale: torch.Tensor,
    d: torch.Tensor,
    rows: torch.Tensor,
    eligible: torch.Tensor,
    lam: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Newton steps on f from ``lam`` (module docstring); returns the last ``lam``, its values and the rows."""
    g = torch.where(rows, -d, torch.zeros_like(d))
    v = _values(j, scale, lam)
    absv = v.abs()
    f = float(absv.sum(dtype=torch.float64))
    eps = float(torch.quantile(absv[:: max(1, v.numel() // 16384)].double(), 0.02))
    for _ in range(NEWTON_STEPS):
        if not eps > 0 or not np.isfinite(f):
            break
        grad = (j @ torch.sign(v)).double() * scale
        # rows the step u = -sign(v) t, t ~ 1/f, would break join with lam = 0 (g^T lam and f unchanged)
        broken = eligible & ~rows & (-grad > f * d)
        if bool(broken.any()):
            rows |= broken
            g = torch.where(rows, -d, torch.zeros_like(d))
        near = torch.nonzero(absv < eps).flatten()
        min_near = 8 * int(rows.sum()) + 64
        if near.numel() < min_near:  # too few columns for a curvature estimate: widen to the nearest ones
            near = torch.topk(absv, min(min_near, v.numel()), largest=False).indices
            eps = max(eps, float(absv[near].max()))
        weight = 1.0 / eps
        if near.numel() > HESSIAN_COLUMNS:  # an evenly spaced share of them estimates the same sum
            stride = -(-near.numel() // HESSIAN_COLUMNS)
            near, weight = near[::stride], stride / eps
        a_near = j[:, near].double() * scale[:, None]
        step = _qp_step(grad, (a_near * weight) @ a_near.T, g, lam, rows)
        if not bool(step.abs().max() > 0):  # nothing to move (one row, or every multiplier held at 0)
            break
        alpha, improved = 1.0, False
        while alpha >= 1.0 / 64:
            new = (lam + alpha * step).clamp(min=0.0)
            norm = float(g @ new)
            if norm > 0:
                new = new / norm
                v_new = _values(j, scale, new)
                abs_new = v_new.abs()
                f_new = float(abs_new.sum(dtype=torch.float64))
                if f_new <= f:
                    improved = True
                    break
            alpha *= 0.5
        if not improved:
            break
        moved = float((a_near.T @ (new - lam)).abs().median())
        decrease = f - f_new
        lam, v, f, absv = new, v_new, f_new, abs_new
        eps = max(2.0 * moved, 0.05 * eps)
        if decrease <= RELATIVE_DECREASE * f:
            break
    return lam, v, rows


def _qp_step(
    grad: torch.Tensor, hess: torch.Tensor, g: torch.Tensor, lam: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """``argmin grad^T s + s^T hess s / 2`` over ``g^T s = 0``, ``lam + s >= 0``, ``s = 0`` outside ``rows``: a
    primal active-set method on at most C variables (host numpy; C <= ~100)."""
    gr, h, gv, lv = (x.detach().cpu().numpy().astype(np.float64) for x in (grad, hess, g, lam))
    free_rows = rows.cpu().numpy()
    c = lv.shape[0]
    fixed = ~free_rows | (lv <= 0)
    s = np.zeros(c)
    for _ in range(4 * c):
        idx = np.flatnonzero(~fixed)
        k = idx.size
        if k == 0:
            break
        kkt = np.zeros((k + 1, k + 1))
        kkt[:k, :k] = h[np.ix_(idx, idx)]
        kkt[:k, k] = kkt[k, :k] = gv[idx]
        sol = np.linalg.lstsq(kkt, np.concatenate([-gr[idx], [0.0]]), rcond=None)[0]
        s = np.zeros(c)
        s[idx] = sol[:k]
        hit = ~fixed & (lv + s < 0)
        if hit.any():  # a multiplier reaches 0 first: hold it there
            ratio = np.where(hit, lv / np.maximum(-s, 1e-300), np.inf)
            fixed[int(np.argmin(ratio))] = True
            continue
        slope = gr + h @ s + sol[k] * gv  # the model's slope along lam_i (constraint included)
        release = free_rows & fixed & (slope < -1e-12 * max(np.abs(slope).max(), 1e-300))
        if release.any():
            fixed[int(np.argmin(np.where(release, slope, np.inf)))] = False
            continue
        break
    return torch.as_tensor(s, dtype=torch.float64, device=lam.device)
