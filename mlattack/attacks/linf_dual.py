"""The dual estimate of MLA-LP's L-inf LP (stage 1 of :mod:`mlattack.attacks.linf_lp`), batched over samples.

For each sample ``k`` with unit-L1 rows ``J_k`` (C x D) and ``g_k = -delta_k``: approximately minimise
``||J_k^T lam||_1`` over ``{lam >= 0, g_k^T lam = 1}`` (rows outside ``rows[k]`` fixed at ``lam = 0``) by Newton's
method on ``sum_i sqrt((J^T lam)_i^2 + eps^2) - mu sum_j log lam_j``, ``eps`` and ``mu`` driven towards 0.

The whole batch moves together on the device it lives on: a sample whose Newton decrement has converged, or whose
line search finds no safe progress, is frozen for the rest of the round by a mask, not by a branch, and the host
reads one flag per Newton step and per backtracking halving for the batch (never a value per sample). The result is
only a warm start: the crossover that follows is exact whatever it is.
"""

from __future__ import annotations

import torch

#: columns of J that steer one Newton step at most (strided over the near set beyond that)
HESSIAN_COLUMNS = 16384


def _curvature_columns(near: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, S) column indices and weights of the Hessian estimate, padding at weight 0. While some sample's near
    set is larger than ``2 * HESSIAN_COLUMNS``: every ``stride``-th column of all D, the weight scaled by the stride
    (an unbiased estimate, one strided view); afterwards each sample's near set exactly."""
    k, d = near.shape
    count = near.sum(1)
    most = int(count.max())
    if most > 2 * HESSIAN_COLUMNS:
        stride = -(-d // HESSIAN_COLUMNS)
        cols = torch.arange(0, d, stride, device=near.device).expand(k, -1)
        w = torch.where(
            near[:, ::stride], weight[:, ::stride] * stride, torch.zeros_like(weight[:, ::stride])
        )
        return cols, w
    row, col = near.nonzero(as_tuple=True)
    start = torch.cumsum(count, 0) - count
    slot = torch.arange(row.numel(), device=near.device) - start[row]
    width = max(most, 1)
    cols = torch.zeros(k, width, dtype=torch.long, device=near.device)
    w = torch.zeros(k, width, dtype=weight.dtype, device=near.device)
    cols[row, slot] = col
    w[row, slot] = weight[row, col]
    return cols, w


def dual_estimate(
    j32: torch.Tensor,
    row_scale: torch.Tensor,
    g: torch.Tensor,
    rows: torch.Tensor,
    rounds: int = 8,
    newton: int = 4,
    shrink: float = 0.1,
) -> torch.Tensor:
    """(K, C) float64 approximate dual multipliers of the LP with rows ``row_scale * j32`` (``j32`` (K, C, D)
    float32, ``row_scale`` (K, C) float64: the rows scaled without a scaled copy of J), ``g`` (K, C) float64 and
    ``rows`` (K, C) bool, the rows each sample's LP holds.

    Newton steps: 8 rounds of 4 reach ~1e-5 on real ResNet Jacobians and leave a handful of wrong signs for the
    crossover; 6 x 2 left ~20k of 150k signs wrong. ``J diag(w) J^T`` (the O(C^2 D) cost) and ``J^T lam`` are float32
    and so are the (K, D) vectors (they only steer Newton); the multipliers, the sums over D and the barrier
    are float64.
    """
    k, c, _ = j32.shape
    dtype = torch.float64
    g = torch.where(rows, g, torch.zeros_like(g))
    pos = rows & (g > 0)
    neg = rows & ~pos
    neg_sum = torch.where(neg, -g, torch.zeros_like(g)).sum(1)
    eta = torch.where(
        neg.any(1),
        (0.5 * torch.where(pos, g, torch.zeros_like(g)).sum(1) / (neg_sum + 1e-30)).clamp(max=1.0),
        1.0,
    )
    lam = torch.where(
        pos, torch.ones_like(g), torch.where(neg, eta[:, None].expand_as(g), torch.zeros_like(g))
    )
    lam = start = lam / (g * lam).sum(1, keepdim=True)
    one = torch.ones_like(lam)  # stands in for lam on inactive rows: log 1 = 0 in the barrier

    def times_j(u: torch.Tensor) -> torch.Tensor:  # (K, C) -> (K, D) float32: u^T J per sample
        return torch.bmm((u * row_scale).float().unsqueeze(1), j32).squeeze(1)

    def barrier(lam_: torch.Tensor, rows_: torch.Tensor) -> torch.Tensor:
        return torch.where(rows_, lam_, torch.ones_like(lam_)).log().sum(1)

    v = times_j(lam)  # float32 (K, D); sums over D accumulate in float64
    eps = v.abs().sum(1, dtype=dtype) / v.shape[1] + 1e-30
    mu = v.abs().sum(1, dtype=dtype) * 1e-2 / rows.sum(1).clamp(min=1)
    for _ in range(rounds):
        going = rows.any(1)  # samples still improving in this round
        for _ in range(newton):
            if not bool(going.any()):
                break
            e2 = (eps * eps).float()[:, None]
            phi = torch.sqrt(torch.addcmul(e2, v, v))
            safe_lam = torch.where(rows, lam, one)
            grad = torch.bmm(j32, (v / phi).unsqueeze(2)).squeeze(2).to(dtype) * row_scale
            grad = torch.where(rows, grad - mu[:, None] / safe_lam, torch.zeros_like(grad))
            # curvature eps^2/phi^3 is negligible where |v| >> eps: late rounds touch only a few coordinates
            near = v.abs() < 30 * eps.float()[:, None]
            cols, w = _curvature_columns(near, e2 / phi**3)
            jn = torch.gather(j32, 2, cols.unsqueeze(1).expand(k, c, cols.shape[1]))
            hess = torch.bmm(jn * w.unsqueeze(1), jn.transpose(1, 2)).to(dtype)
            hess = hess * row_scale[:, :, None] * row_scale[:, None, :]
            barrier_h = torch.where(rows, mu[:, None] / safe_lam**2, torch.ones_like(lam))
            kkt = torch.zeros(k, c + 1, c + 1, dtype=dtype, device=j32.device)
            mask2 = (rows[:, :, None] & rows[:, None, :]).to(dtype)
            kkt[:, :c, :c] = hess * mask2 + torch.diag_embed(barrier_h)
            kkt[:, :c, c], kkt[:, c, :c] = g, g
            rhs = torch.cat([-grad, torch.zeros(k, 1, dtype=dtype, device=j32.device)], 1)
            step = torch.linalg.lstsq(kkt, rhs.unsqueeze(2)).solution.squeeze(2)[:, :c]
            step = torch.where(rows & going[:, None], step, torch.zeros_like(step))
            slope, phi_sum = (grad * step).sum(1), phi.sum(1, dtype=dtype)
            going &= -slope >= 1e-12 * phi_sum  # Newton decrement: converged samples rest for this round
            step = torch.where(going[:, None], step, torch.zeros_like(step))
            dv = times_j(step)
            ratio = torch.where(step < 0, -lam / torch.where(step < 0, step, -one), torch.full_like(lam, 2.0))
            alpha = (0.99 * ratio.amin(1)).clamp(max=1.0)
            # backtracking, only on the samples still pending (one sync per halving for the batch). The change of
            # the objective is summed term by term, sqrt(a^2+e^2) - sqrt(b^2+e^2) = (a-b)(a+b)/(sum of roots),
            # so float32 terms resolve decrements far below the objective's own float32 resolution. "not <="
            # also rejects NaN (a step that leaves the barrier's domain through round-off).
            pending = going.nonzero().squeeze(1)
            while pending.numel():
                p = pending
                a = alpha[p]
                t = a.float()[:, None] * dv[p]
                v1 = v[p] + t
                root = torch.sqrt(torch.addcmul(e2[p], v1, v1)) + phi[p]
                change = (t * (v[p] + v1) / root).sum(1, dtype=dtype)
                change -= mu[p] * (barrier(lam[p] + a[:, None] * step[p], rows[p]) - barrier(lam[p], rows[p]))
                bad = (a > 1e-12) & ~(change <= 1e-4 * a * slope[p])
                alpha[p] = torch.where(bad, a * 0.5, a)
                pending = p[bad]
            new = lam + alpha[:, None] * step
            scale = (g * new).sum(1)  # stay on the constraint despite round-off
            ok = going & (alpha > 1e-12) & (scale > 0) & torch.where(rows, new > 0, True).all(1)
            going &= ok  # no safe progress at this smoothing level: the sample rests for this round
            safe_scale = torch.where(ok, scale, torch.ones_like(scale))[:, None]
            lam = torch.where(ok[:, None], new / safe_scale, lam)
            v = torch.where(ok[:, None], (v + alpha.float()[:, None] * dv) / safe_scale.float(), v)
        eps = eps * shrink
        mu = mu * shrink
    # only a warm start: anything unusable falls back to the first guess (the crossover stays exact either way)
    return torch.where(torch.isfinite(lam).all(1, keepdim=True), lam, start)
