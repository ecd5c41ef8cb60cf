"""ML-CW: the Carlini-Wagner L2 attack for multi-label models (Song et al. 2018, "Multi-label adversarial
perturbations"): tanh box, Adam, hinge towards the target on the 0.5 probability threshold plus the squared L2
distance, and a per-sample binary search over the hinge weight ``c``.

Two variants. ``corrected`` (batch-independent, without the code's accidents) runs every sample on its own schedule inside one batch: a sample
whose search step ends (stall or ``max_iter``) restarts from the clean image with its new ``c`` while the others carry
on, so attacking a batch equals attacking its samples one by one. ``reference`` is the study's code
(``attacks/ml_cw_pytorch.py``), quirks included: most importantly its stall check sums the loss over the whole batch
and ends the search step of every sample of the batch at once, so a sample's result depends on the other samples of
its batch (the study attacked consecutive groups of ``adv_batch_size`` = 10; the evaluation loop feeds the same).
With ``early_stop`` a sample that shows the target leaves; the others keep their shared schedule.

The per-sample state is a :class:`CWRows`; :meth:`MLCW.start`, :meth:`MLCW.iterate` and :meth:`MLCW.outcome` are
``perturb``'s three parts, shared with the continuous scheduler (:mod:`mlattack.attacks.mlcw_continuous`), which
drives batch-independent ML-CW (:attr:`MLCW.batch_independent`) with a fixed number of samples in flight.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from mlattack.attacks.base import (
    Attack,
    AttackResult,
    FastScheduler,
    check_count,
    check_positive,
    check_variant,
    quirk,
)
from mlattack.attacks.losses import AttackLoss, shows_target
from mlattack.attacks.mlcw_continuous import run_mlcw_continuous
from mlattack.attacks.mlcw_steps import CWRows, adam_step, next_search_step

_NO_BOUND = 1e10  # "no successful c yet" (upper) as in the reference code
_TANH_SHRINK = 0.999999  # keeps atanh finite at 0 and 1, as in the reference code
_STALL_RATIO = 0.9999  # a check that finds the loss above 99.99 % of the last checked loss ends the step


class MLCW(Attack):
    r"""Multi-label Carlini-Wagner L2 (ML-CW).

    Distance measure: L2.

    Per sample and search step it minimises ``c * sum_j max(0, confidence - s_j (sigmoid(z_j) - 0.5)) + ||x' - o||^2``
    over ``w`` with Adam, ``x' = (tanh(atanh((2x - 1) * 0.999999) + w) + 1) / 2`` (so x' stays in [0, 1]),
    ``s_j = +1`` for target-positive and ``-1`` for target-negative labels, and ``o`` the clean image. A step that
    showed the target sets ``upper = min(upper, c)``, otherwise ``lower = max(lower, c)``; the next ``c`` is
    ``(lower + upper) / 2`` once an upper bound exists, else ``10 * c``. With ``abort_early`` a step ends when the
    loss, checked every ``check_every`` iterations, fell by less than 0.01 % since the last check. The returned image
    is the best over all steps: most target labels shown, then smallest L2. (The study's code also sets CW's
    "repeat with the upper bound" on the last step, but after that step's ``c`` was copied to the loss, so it has
    no effect; neither variant has it.)

    Arguments:
        max_iter: Adam steps per binary-search step (study: 1000).
        binary_search_steps: values of ``c`` tried per sample (study: 10).
        initial_const: first ``c`` (study: 1e5).
        lr: Adam learning rate (study: 0.01).
        abort_early: end a search step when the loss stalls (study: yes).
        check_every: iterations between stall checks; ``None`` = ``max(max_iter // 10, 1)`` as in the study.
        confidence: margin on the probability scale the hinge asks for (study: 0).
        variant: ``"reference"`` (the study's code) or ``"corrected"`` (batch-independent, without the code's accidents).
            Each quirk below is ``None`` (follow the variant) or an explicit bool that switches it alone.
        batch_stall_check: the stall check compares the batch's summed loss and ends the step of every sample in
            the batch (off: each sample's own loss ends its own step).
        stall_skips_best: the iteration whose check ends the step is not considered for the best image.
        stall_cap_1e10: the first check of a step compares with 1e10 (not infinity), so a step whose loss starts
            above 9.999e9 (a large ``c``; in batch mode the sum over the batch) ends at once, with no step taken.
        half_matches_both: images are judged on the float32 sigmoid output, as the reference's probability models
            gave it: a label at exactly p = 0.5 matches either target sign when images are ranked, and counts as
            positive when a step's success is judged (off: the logit's sign decides both, as in the evaluation).
        tanh_origin: the L2 distance is measured from the tanh reconstruction of the clean image,
            ``x * 0.999999 + 5e-7``, instead of the clean image.
        loss_fn: used only to report the final per-sample loss (ML-CW descends its own hinge objective).
        early_stop, autocast: see :class:`~mlattack.attacks.base.Attack`. Under autocast only the model's forward
            runs in low precision; ``w``, Adam's moments, the hinge and the L2 term stay in fp32 (``c`` in fp64).

    Shape:
        images (N, 3, H, W) in [0, 1], target (N, C) multi-hot -> adversarial images (N, 3, H, W) in [0, 1].

    Example:
        >>> adv = MLCW(max_iter=100, binary_search_steps=3)(model, images, torch.ones(len(images), num_labels))
    """

    norm = "l2"

    def __init__(
        self,
        max_iter: int = 1000,
        binary_search_steps: int = 10,
        initial_const: float = 1e5,
        lr: float = 0.01,
        abort_early: bool = True,
        check_every: int | None = None,
        confidence: float = 0.0,
        variant: str = "corrected",
        batch_stall_check: bool | None = None,
        stall_skips_best: bool | None = None,
        stall_cap_1e10: bool | None = None,
        half_matches_both: bool | None = None,
        tanh_origin: bool | None = None,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.max_iter = check_count("max_iter", max_iter)
        self.binary_search_steps = check_count("binary_search_steps", binary_search_steps)
        self.initial_const = check_positive("initial_const", initial_const)
        self.lr = check_positive("lr", lr)
        if not isinstance(abort_early, bool):
            raise ValueError(f"abort_early must be true or false, got {abort_early!r}")
        self.abort_early = abort_early
        self.check_every = (
            max(self.max_iter // 10, 1) if check_every is None else check_count("check_every", check_every)
        )
        self.confidence = check_positive("confidence", confidence, allow_zero=True)
        self.variant = check_variant(variant)
        self.batch_stall_check = quirk("batch_stall_check", batch_stall_check, variant)
        self.stall_skips_best = quirk("stall_skips_best", stall_skips_best, variant)
        self.stall_cap_1e10 = quirk("stall_cap_1e10", stall_cap_1e10, variant)
        self.half_matches_both = quirk("half_matches_both", half_matches_both, variant)
        self.tanh_origin = quirk("tanh_origin", tanh_origin, variant)

    def _score_and_shown(
        self, p: torch.Tensor, logits: torch.Tensor, sign: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target labels matched (ranks images) and whether the image shows the target (judges a search step)."""
        if self.half_matches_both:  # the reference thresholds the float32 probability; 0.5 matches +1 and -1
            score = ((p - 0.5) * sign >= 0).sum(1)
            shown = ((p >= 0.5) == (sign > 0)).all(1)
        else:
            match = (logits >= 0) == (sign > 0)
            score, shown = match.sum(1), match.all(1)
        return score, shown

    @property
    def batch_independent(self) -> bool:
        """Whether each sample's result is its own: no quirk couples the samples of a batch (only the batch stall
        check does), so the continuous scheduler may drive the attack."""
        return not self.batch_stall_check

    def fast_scheduler(self) -> FastScheduler | None:
        """Its own scheduler when :attr:`batch_independent`; the reference variant's batch stall check couples the
        samples of a group, so it runs group by group."""
        return partial(run_mlcw_continuous, diagnostics=False) if self.batch_independent else None

    def _first_prev(self) -> float:
        return _NO_BOUND if self.stall_cap_1e10 else float("inf")

    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        rows = self.start(images, target)
        while not bool(rows.done.all()):
            self.iterate(model, rows, (~rows.done).nonzero().squeeze(1))
        self.last_const_bounds = (rows.lower, rows.upper)  # diagnostics: each sample's final bracket on c
        return self.outcome(model, rows)

    def start(self, images: Tensor, target: Tensor) -> CWRows:
        """Fresh state for entering samples: first search step, ``c = initial_const``, ``w = 0``, nothing ranked."""
        n, dev = images.shape[0], images.device
        w0 = torch.atanh((2.0 * images - 1.0) * _TANH_SHRINK)

        def full(value: float, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.full((n,), value, dtype=dtype, device=dev)

        return CWRows(
            images=images, target=target, w0=w0,
            origin=(torch.tanh(w0) + 1.0) / 2.0 if self.tanh_origin else images,
            w=torch.zeros_like(images), m1=torch.zeros_like(images), m2=torch.zeros_like(images),
            adam_t=full(0, torch.long), const=full(self.initial_const, torch.float64),
            lower=full(0.0, torch.float64), upper=full(_NO_BOUND, torch.float64),
            prev=full(self._first_prev(), torch.float64),
            search_step=full(0, torch.long), inner=full(0, torch.long), iterations=full(0, torch.long),
            step_score=full(-1, torch.long), step_l2=full(float("inf")), step_shown=full(False, torch.bool),
            best_adv=images.clone(), best_logits=torch.zeros_like(target), best_score=full(-1, torch.long),
            best_l2=full(float("inf")), done=full(False, torch.bool),
        )  # fmt: skip

    def iterate(self, model: nn.Module, s: CWRows, idx: Tensor) -> None:
        """One iteration of the rows ``idx`` of ``s`` (in place; none of them done): rank the image, check for a
        stall, take the Adam step; a row whose search step ends (stall or ``max_iter``) gets its next ``c`` and
        restarts from the clean image, and a row that spent its last step (or shows the target, with
        ``early_stop``) is marked done."""
        dims = tuple(range(1, s.images.ndim))
        target = s.target[idx]
        sign = 2.0 * target - 1.0
        wi = s.w[idx].requires_grad_(True)
        with torch.enable_grad():
            adv = (torch.tanh(s.w0[idx] + wi) + 1.0) / 2.0
            logits = self.forward(model, adv)
            p = torch.sigmoid(logits)
            margin = self.confidence - sign * (p - 0.5)
            hinge = torch.maximum(torch.zeros_like(margin), margin).sum(1)
            l2 = (adv - s.origin[idx]).pow(2).sum(dims)
            weighted = s.const[idx] * hinge  # fp64, as the reference's float64 c promotes it
            total = weighted.sum() + l2.sum()  # the reference's batch loss; its gradient is per sample
            (grad,) = torch.autograd.grad(total, wi)
        adv, logits, p, l2 = adv.detach(), logits.detach(), p.detach(), l2.detach()
        s.iterations[idx] += 1

        stalled = torch.zeros(len(idx), dtype=torch.bool, device=idx.device)
        if self.abort_early:
            checking = s.inner[idx] % self.check_every == 0
            if self.batch_stall_check:  # the active samples share one schedule, so one check for all
                loss = total.detach().expand(len(idx))
            else:
                loss = weighted.detach() + l2.double()
            stalled = checking & (loss > s.prev[idx] * _STALL_RATIO)
            keep = checking & ~stalled
            s.prev[idx[keep]] = loss[keep]

        score, shown = self._score_and_shown(p, logits, sign)
        record = ~stalled if self.stall_skips_best else torch.ones_like(stalled)
        better = record & (
            (score > s.step_score[idx]) | ((score == s.step_score[idx]) & (l2 < s.step_l2[idx]))
        )
        bi = idx[better]
        s.step_score[bi], s.step_l2[bi], s.step_shown[bi] = score[better], l2[better], shown[better]
        better = record & (
            (score > s.best_score[idx]) | ((score == s.best_score[idx]) & (l2 < s.best_l2[idx]))
        )
        bi = idx[better]
        s.best_adv[bi], s.best_logits[bi] = adv[better], logits[better]
        s.best_score[bi], s.best_l2[bi] = score[better], l2[better]

        go = ~stalled
        adam_step(idx[go], grad[go], s.w, s.m1, s.m2, s.adam_t, self.lr)
        s.inner[idx] += 1

        if self.early_stop:
            s.done[idx[record & shows_target(logits, target)]] = True
        ends = (stalled | (s.inner[idx] >= self.max_iter)) & ~s.done[idx]
        if bool(ends.any()):
            ei = idx[ends]
            next_search_step(ei, s.step_shown[ei] & (s.step_score[ei] >= 0), s.const, s.lower, s.upper)
            s.search_step[ei] += 1
            s.done[ei] = s.search_step[ei] >= self.binary_search_steps
            s.w[ei], s.m1[ei], s.m2[ei] = 0.0, 0.0, 0.0
            s.adam_t[ei], s.inner[ei], s.prev[ei] = 0, 0, self._first_prev()
            s.step_score[ei], s.step_l2[ei], s.step_shown[ei] = -1, float("inf"), False

    def outcome(self, model: nn.Module, s: CWRows, diagnostics: bool = True) -> AttackResult:
        """The results of done rows: the best image, with ``reached`` and ``loss`` from its kept logits. A row whose
        every step ended at its first check keeps the clean image, judged by one more forward pass (without
        ``diagnostics``: skipped, ``reached`` False and ``loss`` NaN for such rows)."""
        logits, unseen = s.best_logits, s.best_score < 0
        if diagnostics and bool(unseen.any()):
            with torch.no_grad():
                logits[unseen] = self.forward(model, s.images[unseen]).detach()
        reached, loss = shows_target(logits, s.target), self.loss_fn(logits, s.target)
        if not diagnostics:
            reached, loss = reached & ~unseen, loss.masked_fill(unseen, float("nan"))
        return AttackResult(adv=s.best_adv, iterations=s.iterations, reached=reached, loss=loss)
