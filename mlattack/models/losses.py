"""Training losses. ML-GCN uses torch's own ``nn.MultiLabelSoftMarginLoss``; ML-LIW uses :class:`LIWLoss`."""

from __future__ import annotations

import torch
from torch import nn


def pairwise_exp_rank(scores: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Σ over rows of the mean over (positive i, negative j) pairs of exp(−(s_i − s_j)); rows without a pair skipped.

    scores, positive, negative: (R, K). All pairs at once as (R, K, K) masks, no Python loop.
    """
    diff = scores.unsqueeze(2) - scores.unsqueeze(1)  # [r, i, j] = s_i - s_j
    pairs = positive.unsqueeze(2) & negative.unsqueeze(1)
    sums = torch.where(pairs, torch.exp(-diff), torch.zeros_like(diff)).sum(dim=(1, 2))
    counts = positive.sum(1) * negative.sum(1)
    valid = counts > 0
    # The zero-weighted sum keeps the graph connected when no row has a pair (a batch of all-negative images).
    return (sums[valid] / counts[valid]).sum() + 0.0 * scores.sum()


class LIWLoss(nn.Module):
    """Label-wise + instance-wise pairwise exponential ranking loss on sigmoid outputs (ML-LIW).

    With s = sigmoid(logits):
      instance-wise = Σ over images of the mean over (positive label i, negative label j) of exp(−(s_i − s_j));
      label-wise    = Σ over labels of the mean over (positive image, negative image) of the same;
      loss          = 0.5 · instance-wise + label-wise.
    An image (or label) with no positive or no negative side contributes nothing. The reduction is a *sum* over
    images and labels, not a mean, exactly as the group's reference training script: the loss grows with the batch
    size, which its recipe (batch 100, Adam lr 1e-3) was tuned with.

    ``forward(logits, targets, ignore=None)``: logits and targets (N, C) with targets in {0, 1}; ``ignore`` (N, C)
    bool marks entries that are neither positive nor negative (the reference's VOC "difficult" 0 labels).
    """

    def __init__(self, instance_weight: float = 0.5, label_weight: float = 1.0) -> None:
        super().__init__()
        self.instance_weight, self.label_weight = float(instance_weight), float(label_weight)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, ignore: torch.Tensor | None = None
    ) -> torch.Tensor:
        if logits.shape != targets.shape or logits.ndim != 2:
            raise ValueError(
                f"logits and targets must both be (N, C), got {tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        s = torch.sigmoid(logits)
        pos, neg = targets > 0.5, targets <= 0.5
        if ignore is not None:
            pos, neg = pos & ~ignore.bool(), neg & ~ignore.bool()
        instance = pairwise_exp_rank(s, pos, neg)
        label = pairwise_exp_rank(s.t(), pos.t(), neg.t())
        return self.instance_weight * instance + self.label_weight * label
