"""The linear program of MLA-LP, solved exactly using its structure (C general rows, D box-bounded variables).

    min_r ||r||_inf   s.t.   J r <= delta,   |r_i| <= 1          (J: C x D, C labels, D = 3·H·W pixels)

With ``r = u / s`` (``t = 1/s``) this is the LP  ``max s  s.t.  J u - s·delta <= 0,  -1 <= u <= 1`` whose box rows
are plain variable bounds. Its dual has C variables: ``t* = 1 / min { ||J^T lam||_1 : lam >= 0, -delta^T lam = 1 }``
(a least-absolute-deviations fit), and at the optimum every coordinate with ``(J^T lam)_i != 0`` sits at its bound
``u_i = -sign((J^T lam)_i)``; at most C coordinates are strictly inside. Two stages use that:

1. **Dual start** (:mod:`mlattack.attacks.linf_dual`): the exact LP on a strided subsample of the columns, then
   at most 3 Newton steps on the full dual objective: 7 passes over J at most.
2. **Exact crossover** (:mod:`mlattack.attacks.linf_crossover`, Portnoy & Koenker's 1997 preprocessing for LAD):
   fix ``u_i = -sign((J^T lam)_i)`` outside the free set F of about ``FREE`` coordinates with the smallest
   ``|J^T lam|`` (their sum folded into the right-hand side), solve that reduced LP (|F| + 1 variables, C rows) with
   HiGHS, and check the optimality condition (the sign rule with the reduced LP's own multipliers) on all D
   coordinates, float64 wherever float32 could get a sign wrong; violators join F and the reduced LP is solved again
   from its last basis (:class:`~mlattack.attacks.highs_lp.ReducedLP`). When no coordinate violates it, the reduced
   optimum is a KKT point of the full LP: the same optimum as HiGHS on the full formulation (checked in tests).
   An image of at most ``WHOLE`` coordinates goes to HiGHS whole.

On the CPU mimic of a 448² image (``benchmarks/mlalp_host.py``) that is 2 passes for the row norms and the fixed
sum, 5-7 in the dual start, 1 per crossover round (usually one) and two small HiGHS solves: ~50-90 ms per LP
against 1.5-2 s for the smoothed-Newton estimate it replaces (same optimum: ``benchmarks/README.md``).

Row generation: first only the rows the step must fix (``delta_j < 0``), then satisfied rows that the step breaks.
The dual start already adds the rows its estimated step breaks (its Newton passes give ``J u`` for free); a row
broken by the crossover's optimum joins the same reduced LP in place (basis and signs kept), with a fresh start
only if that fails. Labels far from their threshold cannot bind a small step, and leaving them out keeps the dual
well scaled when one label sits a hair's breadth off its threshold. Rows are scaled to a root-mean-square entry of
1 (a row scaling keeps the feasible set), so HiGHS's absolute tolerances mean the same on every row.

Infeasible case (no ``|r_i| <= 1`` satisfies ``J r <= delta``, i.e. ``t* > 1``): reported as ``feasible=False`` with
``r = 0``, as the study's code does when its solver finds no optimal solution.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from mlattack.attacks.linf_crossover import SignCrossover
from mlattack.attacks.linf_dual import dual_start

log = logging.getLogger(__name__)

#: images with at most this many coordinates go to HiGHS whole (no dual start, no crossover)
WHOLE = 8192
#: size of the crossover's first free set (the columns nearest their kink under the dual start)
FREE = 1024


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

    The checks run batched; the dual start and the crossover (module docstring) go sample by sample, HiGHS on the
    host. Numerical failures (non-finite input, HiGHS giving up) yield ``feasible=False`` with ``r = 0`` and a
    warning: the sample gets no step, as when the reference's solver returns nothing.
    """
    jac, k, n = jac.detach(), jac.shape[0], jac.shape[2]
    dev = jac.device
    d = delta.detach().double()
    r = torch.zeros(k, n, dtype=torch.float64, device=dev)
    t = torch.zeros(k, dtype=torch.float64, device=dev)
    norms = _row_norms(jac)
    live = norms > 0
    finite = torch.isfinite(norms).all(1) & torch.isfinite(d).all(1)
    # a row 0 <= delta_j < 0 that no step can fix
    infeasible = ~finite | (~live & (d < 0)).any(1)
    # row scaling keeps the feasible set; rms entry 1
    scale = torch.where(live & finite[:, None], n**0.5 / torch.where(live, norms, 1.0), 0.0)
    d = d * scale
    # Row generation: start from the violated rows only and add satisfied rows once the step breaks them. Labels
    # far from their threshold would otherwise sit in the dual beside a row violated by 1e-9 with multipliers 1e9
    # apart.
    rows = live & (d < 0) & ~infeasible[:, None]
    todo = rows.any(1)
    if not bool(finite.all()):
        log.warning("MLA-LP: non-finite Jacobian or loss gap; no step for the sample(s)")
    for i in todo.nonzero().flatten().tolist():
        xo, sol = None, None
        while True:
            try:
                if xo is not None:  # the broken rows join the same reduced LP: its basis and signs stay
                    xo.add_rows(rows[i])
                    try:
                        sol = xo.run(max_rounds)
                    except RuntimeError:  # a fresh start below decides
                        sol = None
                if sol is None:  # first round, or the kept signs were too far off for the new rows
                    xo = _start(jac[i], scale[i], rows[i], d[i], norms[i], live[i])
                    sol = xo.run(max_rounds)
            except (RuntimeError, ValueError) as e:
                log.warning("MLA-LP: %s; no step for this sample (as when the reference's solver fails)", e)
                sol = None
            if (
                sol is None or sol.t > 1.0 + 1e-9
            ):  # a relaxation without a step in the box: none for the full LP
                infeasible[i] = True
                break
            rows[i] = xo.m
            broken = live[i] & ~rows[i] & (sol.jr > d[i] + 1e-9 * sol.t)
            if not bool(broken.any()):
                r[i], t[i] = sol.r, sol.t
                break
            rows[i] |= broken
            sol = None
    r[infeasible] = 0.0
    t[infeasible] = float("inf")
    return r, t, ~infeasible


def _row_norms(jac: torch.Tensor) -> torch.Tensor:
    """(K, C) float64 L2 norms of the rows: one pass in J's dtype; rows whose float32 sum of squares under- or
    overflowed (all entries below ~1e-19, or one above ~1e19) are redone in float64, so a row is zero, or
    non-finite, exactly when it is."""
    norms = torch.linalg.vector_norm(jac, 2, dim=2).double()
    redo = ~torch.isfinite(norms) | (norms == 0)
    if jac.dtype != torch.float64 and bool(redo.any()):
        kk, cc = redo.nonzero(as_tuple=True)
        norms[kk, cc] = torch.linalg.vector_norm(jac[kk, cc].double(), 2, dim=1)
    return norms


def _start(
    j: torch.Tensor,
    scale: torch.Tensor,
    m: torch.Tensor,
    d: torch.Tensor,
    rownorm: torch.Tensor,
    live: torch.Tensor,
) -> SignCrossover:
    """The crossover of the LP on the rows ``m`` of ``scale * j`` (``d``: the scaled gaps; more ``live`` rows when
    the dual start sees the step breaking them), from the dual start's nearest columns (every column for a small
    image)."""
    n = j.shape[1]
    if n <= WHOLE:
        return SignCrossover(j, scale, m, d, None, torch.arange(n, device=j.device))
    _, v, m = dual_start(j, scale, d, m, live)
    # about FREE columns nearest their kink: a threshold from every 8th |v| (cheaper than topk over D)
    absv = v.abs()
    sample = absv[::8]
    cut = torch.kthvalue(sample, max(1, min(sample.numel(), FREE // 8))).values
    free = torch.nonzero(absv <= cut).flatten()
    return SignCrossover(j, scale, m, d, v, free, rownorm)
