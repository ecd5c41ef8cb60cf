"""Losses the attacks descend. Each maps (logits (N, C), target (N, C) multi-hot) -> per-sample loss (N,).

Per-sample values (not a batch mean) keep attacks batch-independent: the gradient of ``loss.sum()`` w.r.t. one
image depends on that image only, and early stopping / best-so-far tracking can compare samples individually.
"""

from __future__ import annotations

from typing import Protocol

import torch

PROB_EPS = 1e-6


class AttackLoss(Protocol):
    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


def clamped_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid outputs clamped to [1e-6, 1 - 1e-6] as in the study's code (keeps log() finite)."""
    return torch.sigmoid(logits.float()).clamp(PROB_EPS, 1.0 - PROB_EPS)


def summed_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The study's attack loss: binary cross-entropy of clamped sigmoid outputs, summed over labels.

    Note the clamp: once a label's probability passes 1 - 1e-6 its gradient is zero, exactly like the
    reference ``BCELoss`` on clamped outputs.
    """
    p = clamped_probabilities(logits)
    t = target.to(p.dtype)
    return -(t * p.log() + (1.0 - t) * (1.0 - p).log()).sum(dim=1)


def shows_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the thresholded prediction (sigmoid >= 0.5, i.e. logit >= 0) equals the target on every label."""
    return ((logits >= 0) == (target > 0.5)).all(dim=1)


def labels_shown(logits: torch.Tensor) -> torch.Tensor:
    """(N,) number of labels predicted positive."""
    return (logits >= 0).sum(dim=1)


#: default margin (in logits) of :func:`multilabel_margin`: a label counts as done only a little past the boundary,
#: so that float rounding in the judging forward pass (a folded or bf16 copy of the net) cannot flip it back
MARGIN_KAPPA = 0.1


def multilabel_margin(
    logits: torch.Tensor, target: torch.Tensor, kappa: float = MARGIN_KAPPA
) -> torch.Tensor:
    """Margin-style multi-label loss: sum over labels of ``max(0, kappa - s * logit)``, s = +1 where the target
    shows the label and -1 where it hides it.

    Why: the summed BCE keeps pulling labels that are already on the right side (its weight ``1 - p`` never
    vanishes) and saturates on the far side of its clamp; the margin puts the whole step on the labels still
    wrong, in logit units, and is zero exactly when every label is past the boundary by ``kappa`` (so the point
    with the smallest loss is a success whenever one was seen, which is what ML-APGD returns).
    """
    sign = 2.0 * target.to(torch.float32) - 1.0
    return torch.relu(kappa - sign * logits.float()).sum(dim=1)
