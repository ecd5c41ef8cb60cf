"""MLA-LP: multi-label adversarial examples by linear programming (the MLA-LP paper, as in the study's code).

Per iteration and sample: the per-label losses ``l_j`` (BCE of the clamped sigmoid output against the target label)
and their input Jacobian ``J`` (C x D); the step is the LP ``min ||r||_inf s.t. J r <= delta, |r| <= 1`` with
``delta_j = l_j(threshold_j) - l_j(x)``: the loss each label would have at its threshold probability minus its
current loss. Then ``x <- clip(x + r, 0, 1)``. The LP is solved exactly by :func:`solve_linf_lp`.
"""

from __future__ import annotations

import torch
from torch import nn

from mlattack.attacks.base import Attack, AttackResult, check_positive, keep_best
from mlattack.attacks.jacobian import label_jacobian
from mlattack.attacks.linf_lp import solve_linf_lp
from mlattack.attacks.losses import PROB_EPS, AttackLoss, clamped_probabilities, shows_target


def per_label_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, C) binary cross-entropy of the clamped sigmoid outputs, label by label (the LP's constraint rows)."""
    p = clamped_probabilities(logits)
    return -(target * p.log() + (1.0 - target) * (1.0 - p).log())


class MLALP(Attack):
    r"""MLA-LP.

    Distance measure: L-infinity per step (the LP objective).

    Thresholds: every label starts at 0.5. The labels the attack must flip (clean prediction != target) share one
    threshold per sample, lowered by ``threshold_step`` (not below ``min_threshold``) after an iteration that did
    not increase the number of target labels shown (our reading of "lower when progress stalls"; the study's
    copies of the reference disagree on the exact test). A sample stops when its LP is infeasible (no step with
    ``|r| <= 1``; the reference's solver then returns nothing and the sample is dropped), when the LP asks for no
    step, or (``early_stop``, default on as in the reference) when it shows the target. The returned image is the
    best seen: most target labels shown, then smallest L2 (the reference also resets a sample to its clean image
    when an iteration gets worse; we simply keep the best).

    Arguments:
        max_iter: iterations (study: 20; 10 in the earlier MLA-LP code).
        threshold, threshold_step, min_threshold: the threshold schedule above (0.5, 0.05, 0.1).
        jacobian_chunk: labels per vectorised backward pass (None: all).
        loss_fn, early_stop, autocast: see :class:`~mlattack.attacks.base.Attack`; ``loss_fn`` only reports the
            final loss. The Jacobian and the LP need full precision, so autocast is ignored.

    Shape:
        images (N, 3, H, W) in [0, 1], target (N, C) multi-hot -> adversarial images (N, 3, H, W) in [0, 1].

    Example:
        >>> adv = MLALP(max_iter=20)(model, images, torch.ones(len(images), num_labels))
    """

    precision_sensitive = True

    def __init__(
        self,
        max_iter: int = 20,
        threshold: float = 0.5,
        threshold_step: float = 0.05,
        min_threshold: float = 0.1,
        jacobian_chunk: int | None = None,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = True,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.max_iter = int(check_positive("max_iter", max_iter))
        self.threshold = check_positive("threshold", threshold)
        self.threshold_step = check_positive("threshold_step", threshold_step, allow_zero=True)
        self.min_threshold = check_positive("min_threshold", min_threshold)
        if not PROB_EPS < self.min_threshold <= self.threshold < 1:
            raise ValueError(f"need 0 < min_threshold <= threshold < 1, got {min_threshold!r}, {threshold!r}")
        self.jacobian_chunk = (
            None if jacobian_chunk is None else int(check_positive("jacobian_chunk", jacobian_chunk))
        )

    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        n = images.shape[0]
        dev = images.device
        logits = self.forward(model, images)
        flip = (logits >= 0) != (target > 0.5)  # the labels the attack has to change
        best_adv, best_logits = images.clone(), logits.clone()
        best_score = (~flip).sum(1)
        best_l2 = torch.zeros(n, device=dev)
        last_score = best_score.clone()
        thresh = torch.full((n,), self.threshold, device=dev)
        adv = images.clone()
        iterations = torch.zeros(n, dtype=torch.long, device=dev)
        active = (
            ~shows_target(logits, target) if self.early_stop else torch.ones(n, dtype=torch.bool, device=dev)
        )

        for it in range(self.max_iter + 1):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            tgt = target[idx]
            x = adv[idx]
            z = self.forward(model, x)
            l2 = (x - images[idx]).flatten(1).norm(dim=1)
            score = keep_best(idx, x, z, l2, target, best_adv, best_logits, best_score, best_l2)
            if it > 0:
                stalled = score <= last_score[idx]
                thresh[idx] = torch.where(
                    stalled, (thresh[idx] - self.threshold_step).clamp_min(self.min_threshold), thresh[idx]
                )
            last_score[idx] = score
            if it == self.max_iter:
                break
            if self.early_stop:
                active[idx[shows_target(z, tgt)]] = False
            th = torch.where(flip[idx], thresh[idx, None], torch.full_like(z, self.threshold))
            delta = per_label_bce(torch.logit(th.clamp(PROB_EPS, 1 - PROB_EPS)), tgt) - per_label_bce(z, tgt)
            # a sample whose labels all sit on the right side of their thresholds gets no step (the LP's optimum
            # is r = 0): it stops here, before its Jacobian (C backward passes) is paid for
            active[idx[(delta >= 0).all(1)]] = False
            keep = active[idx]
            if not bool(keep.any()):
                continue
            idx, x, tgt, delta = idx[keep], x[keep], tgt[keep], delta[keep]
            _, jac = self._jacobian(model, x, tgt)
            for k, i in enumerate(idx.tolist()):
                sol = solve_linf_lp(jac[k].flatten(1), delta[k])
                if not sol.feasible or sol.t == 0.0:
                    active[i] = False
                    continue
                adv[i] = (adv[i] + sol.r.view_as(adv[i])).clamp(0, 1)
                iterations[i] += 1
        return AttackResult(
            adv=best_adv,
            iterations=iterations,
            reached=shows_target(best_logits, target),
            loss=self.loss_fn(best_logits, target),
        )

    def _jacobian(
        self, model: nn.Module, x: torch.Tensor, tgt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, C) and the Jacobian of the per-label losses (N, C, D), from one vectorised pass."""
        z, jac = label_jacobian(lambda u: self.forward(model, u), x, self.jacobian_chunk)
        # d BCE_j / d z_j = p_j - t_j, zero where the clamp is active (as the reference's clamped loss)
        p = torch.sigmoid(z)
        dz = torch.where((p > PROB_EPS) & (p < 1 - PROB_EPS), p - tgt, torch.zeros_like(p))
        return z, jac.flatten(2) * dz.unsqueeze(-1)
