"""ML-DP: multi-label DeepFool (Song et al. 2018), as in the study's code.

Each iteration linearises every label's probability around the current image and takes the minimum-L2 step that
moves all of them onto the 0.5 boundary at once: ``r = J^+ (0.5 - p)`` with ``J`` the (C, D) Jacobian of the sigmoid
outputs. The steps accumulate; the image is ``clip(x + r_total)``. ``overshoot`` shifts each label's aim to
``0.5 ± overshoot`` on its target side (0 reproduces the study's code, whose labels land on the boundary itself).
"""

from __future__ import annotations

import torch
from torch import nn

from mlattack.attacks.base import Attack, AttackResult, check_positive, keep_best
from mlattack.attacks.jacobian import label_jacobian
from mlattack.attacks.losses import AttackLoss, shows_target


def minimum_norm_step(
    jac: torch.Tensor, values: torch.Tensor, level: torch.Tensor | float = 0.5
) -> torch.Tensor:
    """Per sample, the minimum-L2 ``r`` with ``jac @ r = level - values`` (least squares if inconsistent).

    ``jac`` (N, C, D), ``values`` (N, C), ``level`` a scalar or (N, C). Solved through the C x C Gram matrix in float64: ``r = J^T (J J^T)^+ b``,
    which equals ``J^+ b``; labels whose gradient vanishes get a zero row and drop out, as in the reference.
    """
    j = jac.double()
    b = (torch.as_tensor(level, dtype=torch.float64, device=values.device) - values.double()).unsqueeze(-1)
    gram = j @ j.transpose(1, 2)
    coef = torch.linalg.pinv(gram, hermitian=True) @ b
    return (j.transpose(1, 2) @ coef).squeeze(-1).to(jac.dtype)


class MLDP(Attack):
    r"""Multi-label DeepFool (ML-DP).

    Distance measure: L2.

    Arguments:
        max_iter: linearisation steps (study: 20).
        overshoot: each label aims at probability ``0.5 + overshoot`` (target-positive) or ``0.5 - overshoot``
            (target-negative) instead of 0.5, so it ends just on its target side rather than on the boundary (the
            study's code aims at 0.5 exactly, i.e. 0; its DeepFool ``(1 + overshoot)`` factor is commented out).
        jacobian_chunk: labels per vectorised backward pass (None: all at once; lower it to save memory).
        early_stop: a sample stops once its best image shows the target (on by default: that is when the study's
            code stops updating it). With ``False`` it keeps stepping and keeps the best image.
        loss_fn, autocast: see :class:`~mlattack.attacks.base.Attack`; ``loss_fn`` only reports the final loss.
            The Jacobian and the pseudo-inverse need fp32/fp64, so autocast is ignored.

    The returned image is the best one seen: most target labels shown, then smallest L2 distance to ``x``.

    Shape:
        images (N, 3, H, W) in [0, 1], target (N, C) multi-hot -> adversarial images (N, 3, H, W) in [0, 1].

    Example:
        >>> adv = MLDP(max_iter=20)(model, images, torch.ones(len(images), num_labels))
    """

    precision_sensitive = True

    def __init__(
        self,
        max_iter: int = 20,
        overshoot: float = 0.02,
        jacobian_chunk: int | None = None,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = True,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.max_iter = int(check_positive("max_iter", max_iter))
        self.overshoot = check_positive("overshoot", overshoot, allow_zero=True)
        self.jacobian_chunk = (
            None if jacobian_chunk is None else int(check_positive("jacobian_chunk", jacobian_chunk))
        )

    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        n = images.shape[0]
        dev = images.device
        logits = self.forward(model, images)
        best_adv, best_logits = images.clone(), logits
        best_score = ((logits >= 0) == (target > 0.5)).sum(1)
        best_l2 = torch.zeros(n, device=dev)
        r_total = torch.zeros_like(images)
        iterations = torch.zeros(n, dtype=torch.long, device=dev)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        level = 0.5 + self.overshoot * (2 * target - 1)
        if self.early_stop:
            active &= ~shows_target(logits, target)

        def logits_of(z: torch.Tensor) -> torch.Tensor:
            return self.forward(model, z)

        for _ in range(self.max_iter):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv = (images[idx] + r_total[idx]).clamp(0, 1)
            l2 = (adv - images[idx]).flatten(1).norm(dim=1)
            if self.early_stop:  # a forward first: a sample that just succeeded skips its Jacobian (C backwards)
                keep_best(idx, adv, self.forward(model, adv), l2, target, best_adv, best_logits, best_score, best_l2)
                keep = ~shows_target(best_logits[idx], target[idx])
                active[idx] = keep
                idx, adv = idx[keep], adv[keep]
                if idx.numel() == 0:
                    break
                z, jac = label_jacobian(logits_of, adv, self.jacobian_chunk)
            else:
                z, jac = label_jacobian(logits_of, adv, self.jacobian_chunk)
                keep_best(idx, adv, z, l2, target, best_adv, best_logits, best_score, best_l2)
            p = torch.sigmoid(z)
            jac = jac.flatten(2) * (p * (1 - p)).unsqueeze(-1)  # d sigmoid(z) / dx
            finite = torch.isfinite(jac).flatten(1).all(1) & torch.isfinite(p).all(1)
            if not bool(finite.all()):  # NaN/inf scores or Jacobian (the solver would fail): keep the best so far
                active[idx[~finite]] = False
                idx, p, jac = idx[finite], p[finite], jac[finite]
                if idx.numel() == 0:
                    break
            r_total[idx] += minimum_norm_step(jac, p, level[idx]).view_as(r_total[idx])
            iterations[idx] += 1

        idx = (iterations == self.max_iter).nonzero().squeeze(1)
        if idx.numel():  # evaluate the last step
            adv = (images[idx] + r_total[idx]).clamp(0, 1)
            l2 = (adv - images[idx]).flatten(1).norm(dim=1)
            keep_best(idx, adv, self.forward(model, adv), l2, target, best_adv, best_logits, best_score, best_l2)
        return AttackResult(
            adv=best_adv,
            iterations=iterations,
            reached=shows_target(best_logits, target),
            loss=self.loss_fn(best_logits, target),
        )
