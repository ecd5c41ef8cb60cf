"""The linear program of MLA-LP, solved exactly without handing a D-variable LP to a generic solver.

    min_r ||r||_inf   s.t.   J r <= delta,   |r_i| <= 1          (J: C x D, C labels, D = 3·H·W pixels)

Only C rows are general; the D box rows are what make it big. We use that in two stages:

1. A log-barrier interior-point method on ``min t + M·sum(e)`` s.t. ``J r - e <= delta``, ``|r_i| <= t``, ``e >= 0``
   (elastic rows ``e`` make a strictly feasible start trivial). Its Newton system is a diagonal-plus-arrowhead
   matrix plus the rank-C term ``J^T W J``, solved by the Woodbury identity: each step costs O(C^2 D), no D x D
   matrix is formed. It yields near-optimal row multipliers ``lam`` (C numbers).
2. Crossover to an exact vertex. By LP duality ``t* = max { -delta^T lam : lam >= 0, ||J^T lam||_1 <= 1 }``, and
   at the optimum ``r_i = -t* sign((J^T lam)_i)`` wherever ``(J^T lam)_i != 0``. So we fix those signs outside a small
   set F of uncertain coordinates (smallest ``|J^T lam|``), solve the reduced LP (|F| + 1 + C variables) with HiGHS,
   and check the certificate ``||J^T lam_F||_1 <= 1`` on all D coordinates; violated coordinates join F and we
   repeat. On success the reduced optimum is the full optimum (restricted primal value = relaxed dual value).

Infeasible case (no ``|r_i| <= 1`` satisfies ``J r <= delta``, i.e. ``t* > 1``): reported as ``feasible=False`` with
``r = 0``, as the study's code does when its solver finds no optimal solution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog

_PENALTY = 1e4  # elastic penalty M (rows are scaled to unit L1 norm), raised when it binds


@dataclass
class LinfLPSolution:
    r: torch.Tensor  # (D,) optimal step (zeros when infeasible)
    t: float  # optimal ||r||_inf (inf when infeasible)
    feasible: bool


def solve_linf_lp(jac: torch.Tensor, delta: torch.Tensor, max_rounds: int = 50) -> LinfLPSolution:
    """Exact solution of ``min ||r||_inf s.t. jac @ r <= delta, |r| <= 1`` for one sample (jac (C, D), delta (C,))."""
    dev, dtype = jac.device, jac.dtype
    j = jac.detach().double()
    d = delta.detach().double()
    c_rows, n = j.shape
    zero = LinfLPSolution(torch.zeros(n, dtype=dtype, device=dev), 0.0, True)
    norms = j.abs().sum(1)
    live = norms > 0
    if bool((~live & (d < 0)).any()):  # a row 0 <= delta_j < 0 that no step can fix
        return LinfLPSolution(torch.zeros(n, dtype=dtype, device=dev), float("inf"), False)
    j, d = j[live] / norms[live, None], d[live] / norms[live]
    if j.shape[0] == 0 or bool((d >= 0).all()):
        return zero
    lam = _barrier_multipliers(j, d)
    penalty = _PENALTY
    v = lam @ j
    size = min(n, 4 * c_rows + 64)
    free = torch.argsort(v.abs())[:size]
    sign = torch.sign(v)
    for _ in range(max_rounds):
        mask = torch.zeros(n, dtype=torch.bool, device=j.device)
        mask[free] = True
        b = j[:, ~mask] @ sign[~mask]
        r_free, t, e, lam_f = _reduced_lp(j[:, free].cpu().numpy(), b.cpu().numpy(), d.cpu().numpy(), penalty)
        lam_f = torch.from_numpy(lam_f).to(j.device)
        v = lam_f @ j
        viol = ~mask & (sign * v <= 0) & (v != 0)
        if float(v.abs().sum()) <= 1 + 1e-9:
            if e.sum() <= 1e-9 * max(1.0, t):
                if t > 1 + 1e-9:
                    return LinfLPSolution(torch.zeros(n, dtype=dtype, device=dev), t, False)
                r = -t * sign
                r[free] = torch.from_numpy(r_free).to(j.device)
                return LinfLPSolution(r.to(dtype=dtype, device=dev), t, True)
            g = float(v.abs().sum())
            if g > 0 and float(-(d @ lam_f)) / g > 1:  # a dual point certifying t* > 1
                return LinfLPSolution(torch.zeros(n, dtype=dtype, device=dev), float("inf"), False)
            penalty *= 1e3
            continue
        free = torch.cat([free, viol.nonzero().squeeze(1)])
    raise RuntimeError("solve_linf_lp: crossover did not converge")


def _barrier_multipliers(j: torch.Tensor, d: torch.Tensor, tol: float = 1e-10) -> torch.Tensor:
    """Approximate optimal row multipliers of the elastic LP by a log-barrier Newton method (see module doc)."""
    c, n = j.shape
    m_pen = _PENALTY
    r = torch.zeros(n, dtype=j.dtype, device=j.device)
    t = torch.ones((), dtype=j.dtype, device=j.device)
    e = (-d).clamp_min(0) + 1.0
    n_constraints = 2 * n + 2 * c
    tau = float(n_constraints)  # the centre then has t of order 1

    def barrier(r: torch.Tensor, t: torch.Tensor, e: torch.Tensor) -> float:
        g, p, q = d - j @ r + e, t - r, t + r
        if bool((g <= 0).any() or (p <= 0).any() or (q <= 0).any() or (e <= 0).any()):
            return float("inf")
        return float(
            tau * (t + m_pen * e.sum()) - g.log().sum() - p.log().sum() - q.log().sum() - e.log().sum()
        )

    while n_constraints / tau > tol:
        for _ in range(50):
            g, p, q = d - j @ r + e, t - r, t + r
            ip, iq, ig = 1 / p, 1 / q, 1 / g
            grad_r = j.T @ ig + ip - iq
            grad_t = tau - (ip + iq).sum()
            grad_e = tau * m_pen - ig - 1 / e
            diag = ip**2 + iq**2
            h = iq**2 - ip**2
            eta = diag.sum()
            w_inv = g**2
            ee = e**2  # inverse of the e-block diagonal 1/e^2

            # Woodbury with U = [J, 0, -I], weights 1/g^2: H = K0 + U^T diag(1/g^2) U
            ur, ut, ue = _arrow_solve(
                diag,
                h,
                eta,
                ee,
                j.T,
                torch.zeros(c, dtype=j.dtype, device=j.device),
                -torch.eye(c, dtype=j.dtype, device=j.device),
            )
            small = torch.diag(w_inv) + j @ ur - ue  # W^-1 + U K0^-1 U^T   (U·col = J xr - xe)
            xr, xt, xe = _arrow_solve(diag, h, eta, ee, -grad_r, -grad_t, -grad_e)
            corr = torch.linalg.solve(small, j @ xr - xe)
            dr, dt, de = xr - ur @ corr, xt - ut @ corr, xe - ue @ corr
            dec = -(grad_r @ dr + grad_t * dt + grad_e @ de)
            if float(dec) / 2 <= 1e-12:
                break
            f0, step = barrier(r, t, e), 1.0
            while barrier(r + step * dr, t + step * dt, e + step * de) > f0 - 0.25 * step * float(dec):
                step *= 0.5
                if step < 1e-12:
                    break
            r, t, e = r + step * dr, t + step * dt, e + step * de
        tau *= 20.0
    return (1.0 / (tau / 20.0)) / (d - j @ r + e)


def _arrow_solve(diag, h, eta, ee, br, bt, be):
    """Solve K0 x = b, K0 = [[diag(diag), h, 0], [h^T, eta, 0], [0, 0, diag(1/ee)]]; ``br`` may hold several columns."""
    st = eta - (h * h / diag).sum()
    xt = (bt - (h / diag) @ br) / st
    xr = (br - h[:, None] * xt[None, :]) / diag[:, None] if br.ndim == 2 else (br - h * xt) / diag
    return xr, xt, be * (ee[:, None] if be.ndim == 2 else ee)


def _reduced_lp(j_free: np.ndarray, b: np.ndarray, d: np.ndarray, penalty: float):
    """HiGHS on: min t + M·sum(e) s.t. J_F r_F - t·b - e <= d, |r_F| <= t, e >= 0; returns (r_F, t, e, lam)."""
    c, k = j_free.shape
    eye_k = sp.identity(k, format="csr")
    col = sp.csr_matrix(np.ones((k, 1)))
    a_ub = sp.vstack(
        [
            sp.hstack([sp.csr_matrix(j_free), sp.csr_matrix(-b[:, None]), -sp.identity(c)]),
            sp.hstack([eye_k, -col, sp.csr_matrix((k, c))]),
            sp.hstack([-eye_k, -col, sp.csr_matrix((k, c))]),
        ]
    ).tocsc()
    cost = np.concatenate([np.zeros(k), [1.0], np.full(c, penalty)])
    b_ub = np.concatenate([d, np.zeros(2 * k)])
    bounds = [(None, None)] * k + [(0, None)] * (1 + c)
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"solve_linf_lp: HiGHS failed on the reduced LP: {res.message}")
    return res.x[:k], float(res.x[k]), res.x[k + 1 :], -res.ineqlin.marginals[:c]
