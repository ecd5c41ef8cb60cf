"""ML-CW's per-sample state and its two update rules, on the rows of a batch whose samples may sit at different points
of their schedule (shared by :class:`~mlattack.attacks.mlcw.MLCW` and its continuous scheduler)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
_BOUNDED = 1e9  # an upper bound below this is a real one (the "none yet" value is 1e10)


def adam_step(
    rows: torch.Tensor,
    grad: torch.Tensor,
    w: torch.Tensor,
    m1: torch.Tensor,
    m2: torch.Tensor,
    steps: torch.Tensor,
    lr: float,
) -> None:
    """One Adam step on rows ``rows`` of ``w`` (in place), each row with its own step count ``steps``.

    The arithmetic is torch.optim.Adam's (CPU, default settings) in the same order, so a batch whose rows share a
    step count moves exactly as the reference's one Adam over the whole batch; a per-row count lets each sample
    restart its search step alone.
    """
    if len(rows) == 0:
        return
    steps[rows] += 1
    t = steps[rows].to(torch.float64).view(-1, *([1] * (w.ndim - 1)))
    m1[rows] = m1[rows].lerp(grad, 1 - _BETA1)
    m2[rows] = m2[rows].mul(_BETA2).addcmul(grad, grad, value=1 - _BETA2)
    step_size = (lr / (1 - _BETA1**t)).float()
    denom = (m2[rows].sqrt() / ((1 - _BETA2**t) ** 0.5).float()).add(_EPS)
    w[rows] = w[rows] - step_size * m1[rows] / denom


def next_search_step(
    rows: torch.Tensor, success: torch.Tensor, const: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
) -> None:
    """The binary-search update of ``c`` (in place) for the samples ``rows`` whose search step just ended:
    a success lowers the upper bound to ``c``, a failure raises the lower bound to ``c``; then ``c`` bisects the
    bracket once an upper bound exists, else a failure multiplies it by 10 (a success keeps it)."""
    c = const[rows]
    up = torch.where(success, torch.minimum(upper[rows], c), upper[rows])
    lo = torch.where(success, lower[rows], torch.maximum(lower[rows], c))
    const[rows] = torch.where(up < _BOUNDED, (lo + up) / 2, torch.where(success, c, c * 10))
    upper[rows], lower[rows] = up, lo


@dataclass
class CWRows:
    """ML-CW's per-sample state (first dimension: the samples). Every row runs its own binary search, so rows may
    sit at different search steps and iterations."""

    images: Tensor  # clean images
    target: Tensor
    w0: Tensor  # the clean image in tanh space: x' = (tanh(w0 + w) + 1) / 2
    origin: Tensor  # where the L2 distance is measured from
    w: Tensor  # the perturbation in tanh space, then Adam's moments and step count
    m1: Tensor
    m2: Tensor
    adam_t: Tensor
    const: Tensor  # c and its bracket (fp64)
    lower: Tensor
    upper: Tensor
    prev: Tensor  # the loss at the last stall check (fp64)
    search_step: Tensor
    inner: Tensor  # iterations into the current search step
    iterations: Tensor  # iterations in all (forward passes)
    step_score: Tensor  # the best of the current search step (judges it) ...
    step_l2: Tensor
    step_shown: Tensor
    best_adv: Tensor  # ... and the best over all steps (returned)
    best_logits: Tensor
    best_score: Tensor
    best_l2: Tensor
    done: Tensor  # all search steps spent, or (early_stop) the target shown

    def apply(self, fn: Callable[[Tensor], Tensor]) -> CWRows:
        return CWRows(*(fn(getattr(self, f.name)) for f in fields(self)))
