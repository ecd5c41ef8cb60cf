"""ML-APGD's checkpoint rule, shared by :meth:`~mlattack.attacks.apgd.APGD.perturb` (a batch in step) and the
continuous scheduler (:mod:`mlattack.attacks.apgd_continuous`, each sample at its own iteration): where the
checkpoints fall, whether to halve the step there, and the restart from the best point that a halving brings."""

from __future__ import annotations

from typing import Any

import torch


def checkpoint_fractions() -> list[float]:
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), while p_j <= 1.

    Computed in hundredths (integers) so that 0.41 is exactly 41/100, not 0.41000000000000003 (which ceil would
    turn into one iteration later)."""
    p = [0, 22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 3, 6)
        if nxt > 100:
            return [v / 100 for v in p]
        p.append(nxt)


def checkpoints(nb_iter: int) -> list[int]:
    """The checkpoint iterations w_j = ceil(p_j · nb_iter), j >= 1, without repeats (small nb_iter)."""
    hundredths = [round(f * 100) for f in checkpoint_fractions()[1:]]
    return sorted({-(-h * nb_iter // 100) for h in hundredths})


def halve_step(
    successes: torch.Tensor,
    span: int,
    rho: float,
    halved_last: torch.Tensor,
    best_loss: torch.Tensor,
    best_loss_last: torch.Tensor,
) -> torch.Tensor:
    """(N,) bool: the paper's two conditions at a checkpoint. ``successes`` counts the steps since the last
    checkpoint that lowered the loss, ``span`` is the number of those steps; ``halved_last`` and
    ``best_loss_last`` are the decision and the best loss at the last checkpoint."""
    oscillating = successes < rho * span
    stalled = ~halved_last & (best_loss >= best_loss_last)
    return oscillating | stalled


def per_sample_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def restart_where_halved(s: Any, halve: torch.Tensor) -> None:
    """Where ``halve``: halve the step size and go back to the best point, its gradient and loss (in place on
    ``s``, a descent's per-sample state with ``eta, delta, prev, grad, loss, best_delta, best_grad, best_loss``).
    A restart carries no momentum: x(k-1) goes back to the best point as well."""
    s.eta = torch.where(halve, s.eta / 2.0, s.eta)
    back = per_sample_view(halve, s.delta)
    s.delta = torch.where(back, s.best_delta, s.delta)
    s.prev = torch.where(back, s.best_delta, s.prev)
    s.grad = torch.where(back, s.best_grad, s.grad)
    s.loss = torch.where(halve, s.best_loss, s.loss)
