"""Test oracle: the control flow of the study's MLA-LP (``attacks/ml_lp.py``, class ``MLLP``, of
MiLab-HITSZ/2022ChenEmpiricalMLAE), written from a reading of it, to check ``MLALP(variant="reference")``.

What it keeps from the reading (numpy bookkeeping, torch only for the model's outputs and the per-label loss
Jacobian, HiGHS on the full LP where the reference calls MOSEK's interior-point solver):
- the image is float64 after the first step and rounded to float32 only for the model; ``y`` is the target {0, 1};
- per iteration: samples whose best prediction shows the target join the give-up list; the Jacobian of the per-label
  BCE of the *clamped* probabilities, with all-zero rows deleted; the LP over (r, z): ``min z`` with
  ``J r <= loss(threshold) - loss(now)``, ``-z <= r <= z``, ``r`` in [-1, 1], ``z >= 0``; no solution gives r = 0;
- after the step, for each sample i not given up, in order: entry i of the batch's flattened attacked outputs equal
  to the same entry of the clamped outputs before the step (from iteration 5 on) gives i up; so does an LP without
  solution; otherwise the threshold test on entry i may write one lowered value to every attacked label;
- the best image by (labels equal to target, then the RMSD of the perturbation); a sample that got worse than its
  best goes back to the clean image, its best too.

Two readings, the same as the attack's (see ``mlattack/attacks/mlalp_rules.py``): an index past the end of the
flattened arrays (``IndexError`` in the reference) makes that test false; the reference's "result is all zeros"
means "the solver reported no optimal solution" (at an optimum z = 0 MOSEK's interior point returns entries of
order 1e-9, not zeros). Outputs for the "unchanged" test come from a plain forward pass of the whole batch (the
reference takes them from the Jacobian's forward pass: the same values on its backend).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import linprog
from torch import nn

EPS = 1e-6


@dataclass
class OracleLog:
    """How often each rule fired, for the tests to check that the quirks were exercised."""

    threshold_updates: int = 0
    resets: int = 0
    stall_give_ups: int = 0
    lp_failures: int = 0
    zero_rows: int = 0
    out_of_range: int = 0


def _probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The study's models output sigmoid probabilities; ours output logits."""
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x.astype(np.float32)))).numpy()


def _loss_jacobian(model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, C, D) float32: d/dx of -(y log o + (1 - y) log(1 - o)), o = clamp(sigmoid(model(x))), label by label."""
    xt = torch.from_numpy(x.astype(np.float32)).requires_grad_(True)
    o = torch.clamp(torch.sigmoid(model(xt)), EPS, 1 - EPS)
    yt = torch.from_numpy(y.astype(np.float32))
    loss = -(yt * torch.log(o) + (1 - yt) * torch.log(1 - o))
    rows = []
    for j in range(y.shape[1]):
        (g,) = torch.autograd.grad(loss[:, j].sum(), xt, retain_graph=True)
        rows.append(g.reshape(len(x), -1).numpy())
    return np.stack(rows, axis=1)


def _lp(jac: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, bool]:
    """The full LP over (r_1..r_D, z); r = 0 and False when HiGHS reports no optimal solution."""
    c, d = jac.shape
    eye, col = sparse.identity(d), sparse.csr_matrix(np.ones((d, 1)))
    a_ub = sparse.vstack(
        [
            sparse.hstack([sparse.csr_matrix(jac), sparse.csr_matrix((c, 1))]),
            sparse.hstack([eye, -col]),
            sparse.hstack([-eye, -col]),
        ]
    )
    cost = np.zeros(d + 1)
    cost[-1] = 1.0
    b_ub = np.concatenate([delta, np.zeros(2 * d)])
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(-1, 1)] * d + [(0, None)], method="highs")
    if res.status != 0:
        return np.zeros(d), False
    return res.x[:d], True


def mlalp_reference(
    model: nn.Module, x: np.ndarray, y: np.ndarray, a_m: np.ndarray, max_iter: int = 20
) -> tuple[np.ndarray, OracleLog]:
    """Best adversarial images (N, 3, H, W) float64 for images ``x`` (float32 in [0, 1]), target ``y`` (N, C) in
    {0, 1} and the attacked labels ``a_m`` (N, C) in {0, 1}, plus the log of the rules that fired."""
    log = OracleLog()
    n = len(x)
    y = y.astype(np.int64)
    output = _probs(model, x)
    pred = (output >= 0.5).astype(np.int64)
    best_adv, best_pred, adv = x.copy(), pred.copy(), x.copy()
    thr = np.full(y.shape, 0.5)
    mask = a_m == 1
    before = output[mask].copy()
    gave_up: list[int] = []

    for it in range(max_iter):
        if len(gave_up) == n:
            break
        for i in range(n):
            if (best_pred[i] == y[i]).all() and i not in gave_up:
                gave_up.append(i)
        out_c = np.clip(_probs(model, adv), EPS, 1 - EPS)
        jac = _loss_jacobian(model, adv, y)
        step = np.zeros((n, jac.shape[2]))
        solved = np.ones(n, dtype=bool)
        for i in range(n):
            if i in gave_up:
                continue
            loss_now = -(y[i] * np.log(out_c[i]) + (1 - y[i]) * np.log(1 - out_c[i]))
            loss_thr = -(y[i] * np.log(thr[i]) + (1 - y[i]) * np.log(1 - thr[i]))
            keep = ~(jac[i] == 0).all(axis=1)
            log.zero_rows += int((~keep).sum())
            step[i], solved[i] = _lp(jac[i][keep].astype(np.float64), (loss_thr - loss_now)[keep])
        temp = np.clip(adv + step.reshape(adv.shape), 0.0, 1.0)
        new = _probs(model, temp)
        new_flat, cur_flat = new[mask], out_c[mask]
        for i in range(n):
            if i in gave_up:
                continue
            in_range = i < new_flat.size
            log.out_of_range += not in_range
            if in_range and new_flat[i] == cur_flat[i] and it >= 5:
                log.stall_give_ups += 1
                gave_up.append(i)
                continue
            if not solved[i]:
                log.lp_failures += 1
                gave_up.append(i)
                continue
            if not in_range:
                continue
            flat_thr = thr[mask]
            if (before[i] <= new_flat[i] or new_flat[i] < 0.6) and flat_thr[i] > 0.1:
                thr[mask] = flat_thr[i] - 0.05
                log.threshold_updates += 1
        adv = temp
        before = new_flat
        adv_pred = (new >= 0.5).astype(np.int64)
        for i in range(n):
            if i in gave_up:
                continue
            now, best = int((adv_pred[i] == y[i]).sum()), int((best_pred[i] == y[i]).sum())
            rmsd_now = np.sqrt(np.mean(np.square(adv[i] - x[i])))
            rmsd_best = np.sqrt(np.mean(np.square(best_adv[i] - x[i])))
            if now > best or (now == best and rmsd_now < rmsd_best):
                best_adv[i], best_pred[i] = adv[i], adv_pred[i]
            elif now < best:
                log.resets += 1
                adv[i], best_adv[i], best_pred[i] = x[i], x[i], pred[i]
    return best_adv, log
