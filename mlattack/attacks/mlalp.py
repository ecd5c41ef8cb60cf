"""MLA-LP: multi-label adversarial examples by linear programming (Zhou et al. 2020), in two variants.

Per iteration and sample: the per-label losses ``l_j`` (BCE against the target label) and their input Jacobian ``J``
(C x D); the step is the LP ``min ||r||_inf s.t. J r <= delta, |r| <= 1`` with ``delta_j = l_j(threshold_j) -
l_j(x)``: the loss each label would have at its threshold probability minus its current loss. Then
``x <- clip(x + r, 0, 1)``. The LP is solved exactly by :func:`solve_linf_lp`.

``reference`` is the study's code (``attacks/ml_lp.py``, class ``MLLP``), quirks included. Its threshold update and
its give-up test read the batch's flattened attacked outputs at the *sample* index, so a sample's result depends on
the other samples of its batch: the study attacked consecutive groups of ``adv_batch_size`` = 10 and the evaluation
loop feeds the same; a batch given to this class is one such group. ``corrected`` is the algorithm per sample and
batch-independent. The switches and what each quirk does: ``docs/PROTOCOL.md`` and :class:`MLALP`.
"""

from __future__ import annotations

import torch
from torch import nn

from mlattack.attacks import mlalp_rules as rules
from mlattack.attacks.base import Attack, AttackResult, check_count, check_positive, check_variant, quirk
from mlattack.attacks.jacobian import label_jacobian
from mlattack.attacks.linf_lp import solve_linf_lp_batch
from mlattack.attacks.losses import PROB_EPS, AttackLoss, clamped_probabilities, shows_target


def per_label_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, C) binary cross-entropy of the clamped sigmoid outputs, label by label (the LP's constraint rows)."""
    p = clamped_probabilities(logits)
    return -(target * p.log() + (1.0 - target) * (1.0 - p).log())


class MLALP(Attack):
    r"""MLA-LP.

    Distance measure: L-infinity per step (the LP objective).

    Both variants: the attacked labels are those whose clean prediction differs from the target; every label's
    threshold starts at ``threshold``; after each step an attacked label's threshold is lowered by
    ``threshold_step`` while its watched probability did not fall or is below 0.6 (the study's test), not below
    ``min_threshold``. A sample stops when it shows the target (``early_stop``), when its LP has no solution
    (no step with ``|r| <= 1``, or a solver failure), or at ``max_iter``. The returned image is the best seen: most
    target labels shown, then the smaller RMSD of the perturbation.

    Arguments:
        max_iter: iterations (study: 20; 10 in the MLA-LP authors' driver).
        threshold, threshold_step, min_threshold: the threshold schedule (study: 0.5, 0.05, 0.1);
            ``threshold_step=0`` switches the update off.
        variant: ``"reference"`` (the study's code) or ``"corrected"`` (per sample, batch-independent). Each switch
            below is ``None`` (follow the variant) or an explicit bool that switches that quirk alone.
        batch_threshold: the study's update: the test reads entry ``i`` of the batch's flattened attacked outputs
            for sample ``i`` and writes the new value to every attacked label of the batch (one threshold for the
            batch; it reaches 0.05, not 0.1, by float rounding). Off: each attacked label of each sample on its own.
        threshold_downward: thresholds bound the positive probability of every label, so lowering them asks a
            label to show only ``p >= threshold`` (< 0.5: a label can satisfy its row without being shown) and
            watches ``p`` rising as "no progress". Off: they bound the probability of the non-target side, so a
            label to show needs ``p >= 1 - threshold`` (a margin past 0.5) and the test watches that side.
        reset_to_clean: when an iteration leaves a sample with fewer target labels than its best, both its current
            and its best image go back to the clean image. Off: keep the best and continue from the current image.
        stall_give_up: the study's give-up rules: from iteration 5 on, entry ``i`` of the batch's flattened attacked
            outputs unchanged by the step gives sample ``i`` up; an LP optimum ``r = 0`` does not (the study's
            interior-point solver returns entries ~1e-9 there, not the all-zero vector its test looks for). Off: a
            sample stops when its own LP asks for no step.
        delete_zero_rows: all-zero Jacobian rows are deleted from the LP, whatever their loss gap. Off: such a row
            whose loss must fall makes the LP infeasible (the sample stops).
        clamp_probabilities: losses and their Jacobian use sigmoid outputs clamped to [1e-6, 1 - 1e-6], so a
            saturated label has a zero Jacobian row. Off: the exact BCE of the logit.
        half_shows_positive: the attack decides "shown" as the study does, float32 ``sigmoid >= 0.5``, so a label
            with a logit in about (-3e-8, 0) counts as shown (the LP aims labels at exactly 0.5, so on nearly
            linear models they land there). Off: the logit's sign, as the evaluation decides.
        aim_at_threshold: the algorithm (both variants): each LP row asks the label's *linearised loss* to reach
            its loss at the threshold. BCE is convex in the logit, so on a locally linear network the step lands
            short of the threshold (a label to show ends below p = 0.5 after the first step). Off (ablation only):
            the row asks the linearised *logit* to pass the threshold's logit, moved ``threshold_step`` further
            towards the target side (p = 0.55 for a label to show at threshold 0.5), so the step lands past it.
        jacobian_chunk: labels per vectorised backward pass off CPU (None: all); CPU: one pass per label.
        loss_fn, early_stop, autocast: see :class:`~mlattack.attacks.base.Attack`; ``loss_fn`` only reports the
            final loss; ``early_stop`` (default on, as in the study) puts a sample whose best image shows the
            target on the give-up list. The Jacobian and the LP need full precision, so autocast is ignored.

    Shape:
        images (N, 3, H, W) in [0, 1], target (N, C) multi-hot -> adversarial images (N, 3, H, W) in [0, 1].

    Example:
        >>> adv = MLALP(max_iter=20, variant="reference")(model, images, torch.ones(len(images), num_labels))
    """

    norm = "linf"

    precision_sensitive = True

    def __init__(
        self,
        max_iter: int = 20,
        threshold: float = 0.5,
        threshold_step: float = 0.05,
        min_threshold: float = 0.1,
        variant: str = "corrected",
        batch_threshold: bool | None = None,
        threshold_downward: bool | None = None,
        reset_to_clean: bool | None = None,
        stall_give_up: bool | None = None,
        delete_zero_rows: bool | None = None,
        clamp_probabilities: bool | None = None,
        half_shows_positive: bool | None = None,
        aim_at_threshold: bool = True,
        jacobian_chunk: int | None = None,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = True,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.max_iter = check_count("max_iter", max_iter)
        self.threshold = check_positive("threshold", threshold)
        self.threshold_step = check_positive("threshold_step", threshold_step, allow_zero=True)
        self.min_threshold = check_positive("min_threshold", min_threshold)
        if not PROB_EPS < self.min_threshold <= self.threshold < 1:
            raise ValueError(
                f"need 1e-6 < min_threshold <= threshold < 1, got min_threshold={min_threshold!r}, "
                f"threshold={threshold!r}"
            )
        self.variant = check_variant(variant)
        self.batch_threshold = quirk("batch_threshold", batch_threshold, variant)
        self.threshold_downward = quirk("threshold_downward", threshold_downward, variant)
        self.reset_to_clean = quirk("reset_to_clean", reset_to_clean, variant)
        self.stall_give_up = quirk("stall_give_up", stall_give_up, variant)
        self.delete_zero_rows = quirk("delete_zero_rows", delete_zero_rows, variant)
        self.clamp_probabilities = quirk("clamp_probabilities", clamp_probabilities, variant)
        self.half_shows_positive = quirk("half_shows_positive", half_shows_positive, variant)
        if not isinstance(aim_at_threshold, bool):
            raise ValueError(f"aim_at_threshold must be true or false, got {aim_at_threshold!r}")
        self.aim_at_threshold = aim_at_threshold
        self.jacobian_chunk = (
            None if jacobian_chunk is None else int(check_positive("jacobian_chunk", jacobian_chunk))
        )
        #: how often each rule fired in the last call (tests and ablations check that a quirk was exercised)
        self._events: dict[str, int] = {}

    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        n, dev = images.shape[0], images.device
        ev = self._events = dict.fromkeys(
            ("threshold_updates", "resets", "stall_give_ups", "lp_failures", "no_step", "zero_rows"), 0
        )
        x = images.double()  # the study keeps the image in float64 and rounds only for the model
        logits0 = self.forward(model, images)
        attacked = self._shown(logits0) != (target > 0.5)
        score0 = (~attacked).sum(1)
        adv, z_cur = x.clone(), logits0.clone()
        best_adv, best_logits, best_score = x.clone(), logits0.clone(), score0.clone()
        best_dist = torch.zeros(n, dtype=torch.float64, device=dev)
        thr = torch.full(target.shape, self.threshold, dtype=torch.float64, device=dev)
        # outputs before the last step (the threshold test compares with them)
        before = torch.sigmoid(logits0)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        iterations = torch.zeros(n, dtype=torch.long, device=dev)

        for it in range(self.max_iter):
            # the study: a best image showing the target puts the sample on the give-up list
            if self.early_stop:
                done |= (self._shown(best_logits) == (target > 0.5)).all(1)
            act = (~done).nonzero().squeeze(1)
            if act.numel() == 0:
                break
            r, failed = self._steps(model, adv[act], z_cur[act], thr[act], target[act])
            moved = r.abs().amax(1) > 0
            new_adv = adv.clone()
            new_adv[act] = (adv[act] + r.view_as(adv[act])).clamp(0, 1)
            z_new = z_cur.clone()  # an unchanged image has unchanged outputs: no forward pass for it
            if bool(moved.any()):
                z_new[act[moved]] = self.forward(model, new_adv[act[moved]].float())
            p_cur, p_new = torch.sigmoid(z_cur), torch.sigmoid(z_new)
            ev["lp_failures"] += int(failed.sum())

            samples = act.tolist()
            if self.stall_give_up:
                stalled = rules.stall_give_up(samples, it, attacked, p_new, p_cur)
                ev["stall_give_ups"] += sum(stalled)
                give_up = torch.tensor(stalled, dtype=torch.bool, device=dev) | failed
            else:
                give_up = failed | ~moved
                ev["no_step"] += int((~moved & ~failed).sum())
            done[act[give_up]] = True
            self._update_thresholds(act[~give_up], thr, attacked, before, p_new, target, ev)
            adv, z_cur, before = new_adv, z_new, p_new
            iterations[act[moved]] += 1

            # best image; in the study a sample given up in this iteration does not get this iteration's image
            live = act[~give_up]
            score = (self._shown(z_new[live]) == (target[live] > 0.5)).sum(1)
            dist = (adv[live] - x[live]).flatten(1).square().mean(1).sqrt()
            better = (score > best_score[live]) | ((score == best_score[live]) & (dist < best_dist[live]))
            b = live[better]
            best_adv[b], best_logits[b] = adv[b], z_new[b]
            best_score[b], best_dist[b] = score[better], dist[better]
            if self.reset_to_clean:
                w = live[score < best_score[live]]
                ev["resets"] += w.numel()
                adv[w], z_cur[w] = x[w], logits0[w]
                best_adv[w], best_logits[w], best_score[w], best_dist[w] = x[w], logits0[w], score0[w], 0.0
        return AttackResult(
            adv=best_adv.float(),
            iterations=iterations,
            reached=shows_target(best_logits, target),
            loss=self.loss_fn(best_logits, target),
        )

    def _shown(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float()) >= 0.5 if self.half_shows_positive else logits >= 0

    def _update_thresholds(
        self,
        rows: torch.Tensor,
        thr: torch.Tensor,
        attacked: torch.Tensor,
        before: torch.Tensor,
        p_new: torch.Tensor,
        target: torch.Tensor,
        ev: dict[str, int],
    ) -> None:
        if self.threshold_step == 0 or rows.numel() == 0:
            return
        wb = rules.watched(before, target, self.threshold_downward)
        wn = rules.watched(p_new, target, self.threshold_downward)
        args = (thr, attacked, wb, wn, self.threshold_step, self.min_threshold)
        if self.batch_threshold:
            ev["threshold_updates"] += rules.batch_threshold_update(rows.tolist(), *args)
        else:
            ev["threshold_updates"] += rules.label_threshold_update(rows, *args)

    def _steps(
        self, model: nn.Module, x: torch.Tensor, z: torch.Tensor, thr: torch.Tensor, tgt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """LP steps (k, D) float64 for the active samples and whether each LP failed (no solution: r = 0)."""
        k = x.shape[0]
        loss, dloss = rules.label_losses(z, tgt, self.clamp_probabilities)
        if self.aim_at_threshold:
            delta = rules.threshold_losses(thr, tgt, self.threshold_downward) - loss
        else:
            delta = rules.logit_aim_gaps(z, dloss, thr, tgt, self.threshold_downward, self.threshold_step)
        r = torch.zeros(k, x[0].numel(), dtype=torch.float64, device=x.device)
        failed = torch.zeros(k, dtype=torch.bool, device=x.device)
        # a sample whose labels all sit on the right side of their thresholds has the optimum r = 0: its
        # Jacobian (C backward passes) is not needed
        need = (delta < 0).any(1).nonzero().squeeze(1)
        if need.numel() == 0:
            return r, failed
        _, jac = label_jacobian(lambda u: model(u).float(), x[need].float(), self.jacobian_chunk)
        # d l_j / d x (k', C, D) in float32 like the study's autograd; the LP solver works in float64
        jac = jac.flatten(2).mul_(dloss[need].float().unsqueeze(-1))  # in place: no second (k', C, D) tensor
        # all-zero rows: a row with a positive norm is not; only a zero norm (or float32 underflow) needs a look
        zero = torch.linalg.vector_norm(jac, 2, dim=2) == 0
        if bool(zero.any()):
            zero[zero.clone()] = ~jac[zero].any(-1)
        self._events["zero_rows"] += int(zero.sum())
        d = delta[need]
        if self.delete_zero_rows:  # a deleted row constrains nothing: a gap of 0 says the same to the solver
            d = torch.where(zero, torch.zeros_like(d), d)
        step, _, feasible = solve_linf_lp_batch(jac, d)
        # the step in the Jacobian's precision (float32), as the study's solver got float32 rows
        r[need] = step.to(jac.dtype).double()
        failed[need] = ~feasible
        return r, failed
