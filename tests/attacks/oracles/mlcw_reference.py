"""Test oracle: the control flow of the study's ML-CW (``attacks/ml_cw_pytorch.py`` of
MiLab-HITSZ/2022ChenEmpiricalMLAE), written from a reading of it, to check ``MLCW(variant="reference")``.

What it keeps from the reading (numpy bookkeeping, torch for the model, its gradient and Adam, like the reference):
- one batch, one schedule: every binary-search step restarts all samples with a fresh ``torch.optim.Adam`` over the
  whole batch's ``w``; the loss is ``sum_i c_i * hinge_i + sum_i l2_i`` with ``c`` in float64;
- the stall check every ``max(max_iter // 10, 1)`` iterations on that summed loss, starting from 1e10; when it fires,
  the loop ends for the whole batch before that iteration's images are ranked;
- ranking by ``(p - 0.5) * y >= 0`` on the float32 probabilities (y in {-1, +1}), then the L2 distance from the tanh
  reconstruction of the clean image; a step succeeds when its best output, thresholded at p >= 0.5, is the target;
- CW's "repeat" on the last of >= 10 steps, which makes ``c`` an alias of the upper bounds only after the step's
  ``c`` was turned into a tensor, so it changes nothing the attack returns.

One numeric choice: ``atanh`` is torch's. The reference calls ``np.arctanh`` on float32, whose SIMD path is 1 ulp off
torch's on about 1 % of pixels; the study ran on CUDA, where neither applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class OracleLog:
    """What happened, for the tests to check that the quirks fired."""

    #: (search step, iteration) of every batch-level stall
    stalls: list[tuple[int, int]] = field(default_factory=list)
    #: per stall: samples whose own loss fell by more than 0.01 % since the last check (a per-sample check
    #: would have let them go on)
    stopped_while_improving: list[list[int]] = field(default_factory=list)
    #: the c of each sample at the start of each search step
    consts: list[np.ndarray] = field(default_factory=list)
    #: iterations whose images were ranked, per sample
    ranked: np.ndarray | None = None


def mlcw_reference(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    binary_search_steps: int = 10,
    max_iter: int = 1000,
    lr: float = 0.01,
    initial_const: float = 1e5,
) -> tuple[np.ndarray, OracleLog]:
    """Adversarial images (numpy float32) for one batch; ``model`` returns logits, ``target`` is multi-hot."""
    log = OracleLog()
    x = np.clip(images.detach().numpy().astype(np.float32), 0.0, 1.0)
    y = np.where(target.numpy() > 0.5, 1.0, -1.0).astype(np.float32)  # the reference's {-1, +1} targets
    y_t = torch.from_numpy(y)
    n = len(x)
    start = torch.atanh((torch.from_numpy(x) * 2 - 1) * 0.999999)
    centre = (torch.tanh(start) + 1) / 2  # where the distance is measured from

    lo, hi = np.zeros(n), np.full(n, 1e10)
    c = np.full(n, float(initial_const))
    overall_l2, overall_score = np.full(n, 1e10), np.full(n, -1)
    result = x.copy()
    period = max(max_iter // 10, 1)
    log.ranked = np.zeros(n, dtype=np.int64)

    for step in range(binary_search_steps):
        w = torch.zeros_like(start, requires_grad=True)
        adam = torch.optim.Adam([w], lr=lr)
        c_t = torch.from_numpy(c.copy())
        log.consts.append(c.copy())
        if binary_search_steps >= 10 and step == binary_search_steps - 1:
            c = hi  # the reference's "repeat": an alias, set after c_t was made
        step_l2, step_score = np.full(n, 1e10), np.full(n, -1)
        step_out: list[np.ndarray | None] = [None] * n
        last_total, last_own = 1e10, np.full(n, 1e10)

        for it in range(max_iter):
            img = (torch.tanh(w + start) + 1) / 2
            prob = torch.sigmoid(model(img))
            excess = -y_t * (prob - 0.5)
            hinge = torch.maximum(torch.zeros_like(excess), excess).sum(1)
            dist = (img - centre).pow(2).sum((1, 2, 3))
            weighted = c_t * hinge
            total = weighted.sum() + dist.sum()
            adam.zero_grad()
            total.backward()
            adam.step()

            if it % period == 0:
                own = (weighted + dist.double()).detach().numpy()
                if total.item() > last_total * 0.9999:
                    log.stalls.append((step, it))
                    log.stopped_while_improving.append(
                        [i for i in range(n) if own[i] <= last_own[i] * 0.9999]
                    )
                    break
                last_total, last_own = total.item(), own

            p, d, im = prob.detach().numpy(), dist.detach().numpy(), img.detach().numpy()
            log.ranked += 1
            for i in range(n):
                score = int(np.count_nonzero((p[i] - 0.5) * y[i] >= 0))
                if score > step_score[i] or (score == step_score[i] and d[i] < step_l2[i]):
                    step_score[i], step_l2[i], step_out[i] = score, d[i], p[i]
                if score > overall_score[i] or (score == overall_score[i] and d[i] < overall_l2[i]):
                    overall_score[i], overall_l2[i], result[i] = score, d[i], im[i]

        for i in range(n):
            out = step_out[i]
            success = out is not None and bool(np.all(np.where(out >= 0.5, 1.0, -1.0) == y[i]))
            if success:
                hi[i] = min(hi[i], c[i])
                if hi[i] < 1e9:
                    c[i] = (lo[i] + hi[i]) / 2
            else:
                lo[i] = max(lo[i], c[i])
                c[i] = (lo[i] + hi[i]) / 2 if hi[i] < 1e9 else c[i] * 10
    return result, log
