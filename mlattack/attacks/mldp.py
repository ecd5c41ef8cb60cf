"""ML-DP: multi-label DeepFool (Song et al. 2018), without the study's code accidents, or exactly as that code ran it.

Each iteration linearises every label's sigmoid output ``p`` around the current image and takes the minimum-L2 step
that puts all of them at their aim at once, ``J r = level - p`` (``J`` the (C, D) Jacobian of ``p``); the image is
``clip(x + r_total)``. ``variant: reference`` reproduces the study's ``ml_deepfool_pytorch.py``: every label aimed at
0.5 itself, the best image chosen by the norm of the *image*, an exact inverse that skips a singular sample, labels
counted by ``p >= 0.5`` in float32 and unclipped steps accumulated. ``variant: corrected`` (the default) removes the
code's accidents: the same linearisation, a pseudo-inverse, the closest perturbation kept, and a small margin past
the boundary so that a label that lands ends up on its target side (DeepFool's overshoot). The study's code treats
the samples of a batch independently, so neither variant couples them.
"""

from __future__ import annotations

import torch
from torch import nn

from mlattack.attacks.base import Attack, AttackResult, check_count, check_positive, check_variant, quirk
from mlattack.attacks.jacobian import label_jacobian
from mlattack.attacks.losses import AttackLoss, shows_target
from mlattack.attacks.mldp_solve import gram_inverse_step, minimum_norm_step

__all__ = ["MLDP", "minimum_norm_step"]

#: overshoot when none is given: the study aims at 0.5 exactly; DeepFool's own overshoot is 0.02
DEFAULT_OVERSHOOT = {"reference": 0.0, "corrected": 0.02}


class MLDP(Attack):
    r"""Multi-label DeepFool (ML-DP).

    Distance measure: L2.

    Arguments:
        max_iter: linearisation steps (the study: 20, hard-coded in its code).
        variant: ``"corrected"`` (without the code's accidents) or ``"reference"`` (the study's code, quirks included); each
            quirk below is ``None`` (follow the variant) or an explicit bool that switches it alone.
        overshoot: each label aims at ``0.5 + overshoot`` (target-positive) or ``0.5 - overshoot`` (target-negative)
            rather than at the boundary, where a label that lands is shown or not by rounding. None: 0 for the
            reference (its aim is 0.5 itself; the ``(1 + overshoot)`` line it took from DeepFool is commented out),
            0.02 for corrected (DeepFool's value, as a margin on the aim: scaling the total step by 1.02 as DeepFool
            does would push labels that started on their target side back towards the other one).
        best_by_image_norm: between two images that show as many target labels, keep the one whose *image* has the
            smaller L2 norm (the reference: a darker image wins, and it can replace the clean image without showing
            one label more); off: the smaller perturbation ``||x' - x||`` wins, the clean image on a tie.
        skip_singular: solve the step with the reference's arithmetic (float32 Gram, all-zero Gram rows dropped,
            exact inverse) and give a sample no step where that Gram is singular; its image and Jacobian are then the
            same next iteration, so it stays put for the rest of the run. Off: float64 pseudo-inverse, a
            least-squares minimum-norm step for any rank (all-zero rows drop out of it the same way).
        threshold_on_probability: count a label as shown when ``sigmoid(logit) >= 0.5`` in float32, as the study's
            models (sigmoid outputs) do: a logit in (-6e-8, 0) rounds to 0.5 and counts. Off: ``logit >= 0``.
            Only the attack's own best-image and stopping decisions use it; ML-DP aims right at that boundary.
        accumulate_unclipped: add each step to an unclipped running total and linearise at ``clip(x + total)``, as
            the reference does (a step computed at the clipped image is applied to the unclipped one). Off: each
            step starts from the clipped image, ``x_{i+1} = clip(x_i + r_i)``.
        jacobian_chunk: labels per vectorised backward pass off CPU (None: all at once; lower it to save memory);
            on CPU the Jacobian takes one backward pass per label (:mod:`~mlattack.attacks.jacobian`).
        early_stop: a sample stops once its best image shows the target (on by default: the stopping rule of both
            the study's code and DeepFool). With ``False`` it keeps stepping and keeps the best image.
        loss_fn, autocast: see :class:`~mlattack.attacks.base.Attack`; ``loss_fn`` only reports the final loss.
            The Jacobian and the solve need fp32/fp64, so autocast is ignored.

    Steps are accumulated in float64 and the model sees them rounded to float32, as in the study's code. A sample
    stops with its best image so far when its scores, Jacobian or step are not finite (the study's code would carry
    the NaN on), or when it gets no step at all (a singular or all-zero system): its image, and so its next step,
    would not change again.

    Shape:
        images (N, 3, H, W) in [0, 1], target (N, C) multi-hot -> adversarial images (N, 3, H, W) in [0, 1].

    Example:
        >>> adv = MLDP(max_iter=20, variant="reference")(model, images, torch.ones(len(images), num_labels))
    """

    norm = "l2"

    precision_sensitive = True

    def __init__(
        self,
        max_iter: int = 20,
        variant: str = "corrected",
        overshoot: float | None = None,
        best_by_image_norm: bool | None = None,
        skip_singular: bool | None = None,
        threshold_on_probability: bool | None = None,
        accumulate_unclipped: bool | None = None,
        jacobian_chunk: int | None = None,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = True,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.max_iter = check_count("max_iter", max_iter)
        self.variant = check_variant(variant)
        shoot = (
            DEFAULT_OVERSHOOT[self.variant]
            if overshoot is None
            else check_positive("overshoot", overshoot, True)
        )
        if shoot >= 0.5:
            raise ValueError(f"overshoot must be in [0, 0.5) (an aim of 0.5 +- overshoot), got {overshoot!r}")
        self.overshoot = shoot
        self.best_by_image_norm = quirk("best_by_image_norm", best_by_image_norm, self.variant)
        self.skip_singular = quirk("skip_singular", skip_singular, self.variant)
        self.threshold_on_probability = quirk(
            "threshold_on_probability", threshold_on_probability, self.variant
        )
        self.accumulate_unclipped = quirk("accumulate_unclipped", accumulate_unclipped, self.variant)
        self.jacobian_chunk = (
            None if jacobian_chunk is None else int(check_positive("jacobian_chunk", jacobian_chunk))
        )

    def shown(self, logits: torch.Tensor) -> torch.Tensor:
        """Labels the attack counts as shown (see ``threshold_on_probability``)."""
        return torch.sigmoid(logits) >= 0.5 if self.threshold_on_probability else logits >= 0

    def distance(self, adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The tie-break between images that show as many target labels (see ``best_by_image_norm``)."""
        return (adv if self.best_by_image_norm else adv - images).flatten(1).norm(dim=1)

    def steps(
        self, jac: torch.Tensor, p: torch.Tensor, sign: torch.Tensor, level: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float64 steps (n, D) for the rows given, and which rows got one (a singular Gram gets none)."""
        if not self.skip_singular:
            return minimum_norm_step(jac, p, level), torch.ones(len(p), dtype=torch.bool, device=p.device)
        j, pv, sv, lv = (t.detach().cpu().numpy() for t in (jac, p, sign, level))
        out = torch.zeros(jac.shape[0], jac.shape[-1], dtype=torch.float64)
        ok = torch.zeros(len(p), dtype=torch.bool)
        for i in range(len(pv)):
            r = gram_inverse_step(j[i], pv[i], sv[i], lv[i])
            if r is not None:
                out[i], ok[i] = torch.from_numpy(r), True
        return out.to(p.device), ok.to(p.device)

    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        n, dev = images.shape[0], images.device
        pos = target > 0.5
        sign = pos.float() * 2 - 1
        level = 0.5 + self.overshoot * sign
        x64 = images.double()
        logits = self.forward(model, images)
        best_adv, best_logits, best_shown = images.clone(), logits.clone(), self.shown(logits)
        best_score = (best_shown == pos).sum(1)
        best_dist = self.distance(x64, x64)
        r_total = torch.zeros_like(x64)
        iterations = torch.zeros(n, dtype=torch.long, device=dev)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        pending = torch.zeros(n, dtype=torch.bool, device=dev)  # stepped, image not evaluated yet
        if self.early_stop:
            active &= ~(best_shown == pos).all(1)

        def probabilities(z: torch.Tensor) -> torch.Tensor:  # the study's models output sigmoid probabilities
            return torch.sigmoid(self.forward(model, z))

        def evaluate(idx: torch.Tensor) -> torch.Tensor:
            """Forward the current images of rows ``idx``; keep the better ones as best; return them (float32)."""
            adv64 = (x64[idx] + r_total[idx]).clamp(0, 1)
            adv = adv64.float()
            z = self.forward(model, adv)
            shown = self.shown(z)
            score, dist = (shown == pos[idx]).sum(1), self.distance(adv64, x64[idx])
            better = (score > best_score[idx]) | ((score == best_score[idx]) & (dist < best_dist[idx]))
            bi = idx[better]
            best_adv[bi], best_logits[bi], best_shown[bi] = adv[better], z[better], shown[better]
            best_score[bi], best_dist[bi] = score[better], dist[better]
            pending[idx] = False
            return adv

        for _ in range(self.max_iter):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv = evaluate(idx) if bool(pending[idx].any()) else images[idx]  # unstepped rows are still clean
            if (
                self.early_stop
            ):  # a forward first: a sample that just succeeded skips its Jacobian (C backwards)
                keep = ~(best_shown[idx] == pos[idx]).all(1)
                active[idx] = keep
                idx, adv = idx[keep], adv[keep]
                if idx.numel() == 0:
                    break
            p, jac = label_jacobian(probabilities, adv, self.jacobian_chunk)
            jac = jac.flatten(2)
            finite = torch.isfinite(jac).flatten(1).all(1) & torch.isfinite(p).all(1)
            if not bool(
                finite.all()
            ):  # NaN/inf scores or Jacobian (the solver would fail): keep the best so far
                active[idx[~finite]] = False
                idx, p, jac = idx[finite], p[finite], jac[finite]
                if idx.numel() == 0:
                    break
            step, moved = self.steps(jac, p, sign[idx], level[idx])
            # one pass over the (n, D) steps: the largest |r| is NaN or inf iff some entry is, 0 iff all are
            peak = torch.linalg.vector_norm(step, float("inf"), dim=1)
            moved &= torch.isfinite(peak) & (peak > 0)
            active[idx[~moved]] = (
                False  # no step: the same image, Jacobian and step would come back every time
            )
            idx, step = idx[moved], step[moved]
            r_total[idx] += step.view_as(r_total[idx])
            if not self.accumulate_unclipped:
                r_total[idx] = (x64[idx] + r_total[idx]).clamp(0, 1) - x64[idx]
            iterations[idx] += 1
            pending[idx] = True

        idx = pending.nonzero().squeeze(1)
        if idx.numel():  # evaluate the last step
            evaluate(idx)
        return AttackResult(
            adv=best_adv,
            iterations=iterations,
            reached=shows_target(best_logits, target),
            loss=self.loss_fn(best_logits, target),
        )
