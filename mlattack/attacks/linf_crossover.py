"""The exact crossover of MLA-LP's L-inf LP (stage 2 of :mod:`mlattack.attacks.linf_lp`), one sample at a time.

From dual multipliers ``lam`` (any: an estimate, or none when every column is free) fix ``u_i = -sign((A^T lam)_i)``
outside a free set F (``A = scale * J``: the LP's rows scaled), fold the fixed columns into the right-hand side
(Portnoy & Koenker's 1997 "globs" for LAD), and solve the reduced LP ``max s s.t. A_F u_F - s d <= -A_~F u_~F``
with HiGHS. Its multipliers ``y`` give the sign rule for every fixed coordinate: ``u_i`` must sit at
``-sign((A^T y)_i)``. The rule is checked on all D coordinates with float64 signs; violators join F, their share
leaves the right-hand side, and the reduced LP is solved again from its last basis. Once no fixed coordinate
violates it, ``(u, s)`` and ``y`` satisfy the full LP's KKT conditions: its exact optimum, whatever ``lam`` was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mlattack.attacks.highs_lp import ReducedLP

#: columns per float64 chunk of the exact passes over J (a chunk stays in cache; no float64 copy of J)
CHUNK = 4096


@dataclass
class Crossover:
    r: torch.Tensor  # (D,) float64 optimal step of the rows' LP
    t: float  # its ||r||_inf
    jr: torch.Tensor  # (C,) float64 scale * (J r) over all C rows (the broken-row test)
    lam: torch.Tensor  # (C,) float64 the optimal multipliers, -d^T lam = 1 (the optimality certificate)


def dot_rows(
    j: torch.Tensor, coef: torch.Tensor, rownorm: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``coef^T J`` (D,) for rows ``j`` (C, D) and float64 ``coef`` (C,), and the columns whose sign float32 may get
    wrong. Float64 ``j``: exact, no doubt. Float32 ``j`` with ``rownorm`` (C,) its rows' L2 norms: one float32 pass;
    a column is in doubt where ``|v_i|`` is within that pass's error bound, ``(C + 1) 2^-24 sum_j |coef_j J_ji|``
    (C products and sums, and ``coef`` rounded to float32) ``<= 2 (C + 2) 2^-24 sum_j |coef_j| ||J_j||_2``, and only
    such columns need float64. Without ``rownorm``, or where float32 products may be TF32's: float64 in chunks that
    stay in cache (no float64 copy of J)."""
    if j.dtype == torch.float64:
        return coef @ j, torch.zeros(0, dtype=torch.long, device=j.device)
    if rownorm is None or (j.is_cuda and torch.backends.cuda.matmul.allow_tf32):
        v = torch.cat([coef @ j[:, a : a + CHUNK].double() for a in range(0, j.shape[1], CHUNK)])
        return v, torch.zeros(0, dtype=torch.long, device=j.device)
    v = coef.to(j.dtype) @ j
    bound = 2 * (j.shape[0] + 2) * 2.0**-24 * float(coef.abs() @ rownorm)
    return v, torch.nonzero(v.abs() <= bound).flatten()


def fixed_sum(j: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``J sigma`` (C,) float64 for ``sigma`` (D,) float64 in {-1, 0, 1}: exact products, float64 sums."""
    if j.dtype == torch.float64:
        return j @ sigma
    out = torch.zeros(j.shape[0], dtype=torch.float64, device=j.device)
    for a in range(0, j.shape[1], CHUNK):
        out += j[:, a : a + CHUNK].double() @ sigma[a : a + CHUNK]
    return out


def _violators(
    j: torch.Tensor, coef: torch.Tensor, sigma: torch.Tensor, rownorm: torch.Tensor | None
) -> torch.Tensor:
    """Fixed coordinates (``sigma != 0``) where the sign rule fails: ``sigma_i (coef^T J)_i > 1e-12 max |coef^T J|``,
    decided in float64 wherever float32 could decide otherwise."""
    v, doubt = dot_rows(j, coef, rownorm)
    tol = 1e-12 * float(v.abs().max()) if v.numel() else 0.0
    if v.dtype == torch.float64:
        return torch.nonzero(v * sigma > tol).flatten()
    # where float32 is sure of the sign, |v| > bound >= its error; the 1e-12 tolerance is far below that
    sure = ((v > 2 * tol) & (sigma > 0)) | ((v < -2 * tol) & (sigma < 0))
    doubt = doubt[sigma[doubt] != 0]
    sure[doubt] = False
    exact = coef @ j[:, doubt].double()
    return torch.cat([torch.nonzero(sure).flatten(), doubt[exact * sigma[doubt] > tol]])


class SignCrossover:
    """The crossover for one sample, kept between row-generation rounds: :meth:`add_rows` adds rows to the reduced
    LP in place (HiGHS keeps its basis, the fixed signs stay), so a row that the step broke costs a re-solve and a
    check, not a new start.

    ``j`` (C, D) float32 or float64, ``scale`` (C,) float64 its row scaling, ``m`` (C,) bool the LP's rows, ``d``
    (C,) the scaled gaps; ``v`` (D,) = ``(scale * lam)^T j`` for the dual estimate ``lam`` (None: ``free`` holds
    every column), ``free`` the first free set; ``rownorm``: see :func:`dot_rows`."""

    def __init__(
        self,
        j: torch.Tensor,
        scale: torch.Tensor,
        m: torch.Tensor,
        d: torch.Tensor,
        v: torch.Tensor | None,
        free: torch.Tensor,
        rownorm: torch.Tensor | None = None,
    ) -> None:
        n, dev = j.shape[1], j.device
        self.j, self.scale, self.d, self.rownorm = j, scale, d, rownorm
        self.m = m.clone()
        self.in_lp = torch.zeros(n, dtype=torch.bool, device=dev)
        self.in_lp[free] = True
        g = torch.where(m, -d, torch.zeros_like(d))
        if v is None:  # everything free: a uniform guess only sets HiGHS's unit of s
            guess = torch.where(m & (g > 0), 1.0, 0.0).to(torch.float64)
            v = dot_rows(j, guess * scale, None)[0]
            gl = float(g @ guess)
            self.sigma = torch.zeros(n, dtype=torch.float64, device=dev)
        else:
            gl = 1.0  # the estimate is normalised: g^T lam = 1
            self.sigma = torch.where(v >= 0, -1.0, 1.0).to(torch.float64).masked_fill_(self.in_lp, 0.0)
        self.v = v
        # weak duality: s* <= ||A^T lam||_1 / g^T lam; HiGHS solves for s / s0, a variable of order 1
        s0 = float(v.abs().sum(dtype=torch.float64)) / max(gl, 1e-300)
        self.fixed = fixed_sum(j, self.sigma) * scale  # all C rows: J r for the broken-row test comes from it
        self.row_ids = m.nonzero().flatten()  # HiGHS's row order
        self.lp = ReducedLP(d[m].cpu().numpy(), s_unit=s0 if 0 < s0 < float("inf") else 1.0, weight=n)
        self.cols = free
        self.lp.add_columns(self._block(self.row_ids, free))

    def _block(self, rows: torch.Tensor, cols: torch.Tensor) -> np.ndarray:
        # columns first: indexing J's rows first would copy all D columns of them
        return (self.j[:, cols][rows].double() * self.scale[rows, None]).cpu().numpy()

    def add_rows(self, new: torch.Tensor) -> None:
        """Add the rows ``new`` (C,) bool to the LP."""
        ids = (new & ~self.m).nonzero().flatten()
        self.lp.add_rows(self._block(ids, self.cols), self.d[ids].cpu().numpy())
        self.row_ids = torch.cat([self.row_ids, ids])
        self.m[ids] = True

    def run(self, max_rounds: int = 60) -> Crossover | None:
        """Solve and check until no fixed coordinate violates the sign rule (module docstring). ``None`` when the
        LP has no positive ``s`` (no finite step). Raises ``RuntimeError`` when HiGHS fails or ``max_rounds``
        pass."""
        j, scale, dev, n = self.j, self.scale, self.j.device, self.j.shape[1]
        failures = 0
        for _ in range(max_rounds):
            self.lp.set_rhs((-self.fixed[self.row_ids]).cpu().numpy())
            try:
                res = self.lp.solve()
            except (
                RuntimeError
            ):  # HiGHS's "Unknown", seen on nearly infeasible reduced LPs: widen, then give up
                failures += 1
                if failures > 2 or bool(self.in_lp.all()):
                    raise
                res = None
            if res is None:  # the fixed signs leave no feasible point: free the next-nearest columns
                if bool(self.in_lp.all()):
                    return None
                grow = torch.topk(self.v.abs(), min(n, 4 * self.cols.numel()), largest=False).indices
                new = grow[~self.in_lp[grow]]
            else:
                s, u_free, y = res
                coef = torch.zeros_like(scale)
                coef[self.row_ids] = torch.as_tensor(y, dtype=torch.float64, device=dev)
                new = self.cols[:0]
                if not bool(self.in_lp.all()):
                    new = _violators(j, coef * scale, self.sigma, self.rownorm)
                if new.numel() == 0:
                    if s <= 0:
                        return None
                    t = 1.0 / s
                    u_f = torch.as_tensor(u_free, dtype=torch.float64, device=dev).clamp(-1.0, 1.0)
                    u = self.sigma.clone()
                    u[self.cols] = u_f
                    jr = (self.fixed + (j[:, self.cols].double() * scale[:, None]) @ u_f) * t
                    g = torch.where(self.m, -self.d, torch.zeros_like(self.d))
                    return Crossover(u * t, t, jr, coef / max(float(g @ coef), 1e-300))
            self.fixed -= (j[:, new].double() @ self.sigma[new]) * scale
            self.sigma[new] = 0.0
            self.in_lp[new] = True
            self.cols = torch.cat([self.cols, new])
            self.lp.add_columns(self._block(self.row_ids, new))
        raise RuntimeError("the sign-rule crossover did not converge")
