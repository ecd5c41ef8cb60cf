"""Training losses: :class:`MultiLabelSoftMarginLoss` (ML-GCN's) and :class:`LIWLoss` (ML-LIW's).

Both take ``forward(logits, targets, ignore=None)``: ``ignore`` (N, C) bool marks entries that are neither positive
nor negative, so VOC "difficult" labels can be left out of the loss (ML-LIW's reference does that).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check_pair(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape or logits.ndim != 2:
        raise ValueError(
            f"logits and targets must both be (N, C), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )


class MultiLabelSoftMarginLoss(nn.Module):
    """torch's ``nn.MultiLabelSoftMarginLoss`` (per-label binary cross-entropy on logits, mean over labels, then
    over images) that can also leave entries out.

    Without ``ignore`` it is torch's loss exactly. With it, an image's loss is the mean over its kept labels only,
    and images with no kept label are skipped (the loss is 0 when nothing is kept, still differentiable).
    """

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, ignore: torch.Tensor | None = None
    ) -> torch.Tensor:
        _check_pair(logits, targets)
        per_entry = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
        if ignore is None:
            return per_entry.mean(dim=1).mean()
        keep = ~ignore.bool()
        kept = keep.sum(dim=1)
        rows = kept > 0
        per_image = torch.where(keep, per_entry, torch.zeros_like(per_entry)).sum(dim=1)[rows] / kept[rows]
        if not rows.any():  # everything ignored: zero, with the graph kept connected
            return 0.0 * logits.sum()
        return per_image.mean()


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
        _check_pair(logits, targets)
        s = torch.sigmoid(logits)
        pos, neg = targets > 0.5, targets <= 0.5
        if ignore is not None:
            pos, neg = pos & ~ignore.bool(), neg & ~ignore.bool()
        instance = pairwise_exp_rank(s, pos, neg)
        label = pairwise_exp_rank(s.t(), pos.t(), neg.t())
        return self.instance_weight * instance + self.label_weight * label
