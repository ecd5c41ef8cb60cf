"""ML-CW: the Carlini-Wagner L2 attack for multi-label models (Song et al. 2018, "Multi-label adversarial
perturbations"), as run in the study: tanh box, Adam, hinge towards the target on the 0.5 probability threshold plus
the squared L2 distance, and a per-sample binary search over the hinge weight ``c``.

Every sample runs its own schedule (binary-search step, Adam state, abort check) inside one batch: a sample whose
search step ends (abort or ``max_iter``) restarts from the clean image with its new ``c`` while the others carry on,
and a sample that has used all its search steps (or, with ``early_stop``, reached the target) leaves the active batch.
The cost is the sum of the steps each sample really needs, not ``binary_search_steps * max_iter``.
"""

from __future__ import annotations

import torch
from torch import nn

from mlattack.attacks.base import Attack, AttackResult, check_positive, keep_best
from mlattack.attacks.losses import AttackLoss, shows_target

_NO_BOUND = 1e10  # "no successful c yet" (upper) as in the reference code
_TANH_SHRINK = 0.999999  # keeps atanh finite at 0 and 1, as in the reference code


class MLCW(Attack):
    r"""Multi-label Carlini-Wagner L2 (ML-CW).

    Distance measure: L2.

    Per sample and step it minimises ``c * sum_j max(0, confidence - s_j (sigmoid(z_j) - 0.5)) + ||x' - x||_2^2``
    over ``w`` with ``x' = (tanh(atanh((2x - 1) * 0.999999) + w) + 1) / 2`` (so x' stays in [0, 1]), where
    ``s_j = +1`` for target-positive and ``-1`` for target-negative labels. Binary search on ``c`` per sample: a
    step that showed the target at least once sets ``upper = min(upper, c)``, otherwise ``lower = max(lower, c)``;
    the next ``c`` is ``(lower + upper) / 2`` once an upper bound exists, else ``10 * c``. A step aborts when the
    sample's loss, checked every ``check_every`` iterations, fell by less than 0.01 % since the last check.
    The returned image is the best over all steps: most target labels shown, then smallest L2. The study's code
    also computes CW's "repeat with the upper bound" on the last step but never applies it; neither do we.

    Arguments:
        max_iter: Adam steps per binary-search step (study: 1000).
        binary_search_steps: number of values of ``c`` tried per sample (study: 10).
        initial_const: first ``c`` (study: 1e5).
        lr: Adam learning rate (study: 0.01).
        abort_early: stop a search step when the loss stalls.
        check_every: iterations between stall checks (study: ``max_iter // 10`` = 100).
        confidence: margin on the probability scale the hinge asks for (study: 0).
        loss_fn: used only to report the final per-sample loss (ML-CW descends its own hinge objective).
        early_stop, autocast: see :class:`~mlattack.attacks.base.Attack`. Under autocast only the model's forward
            runs in low precision; ``w``, Adam's moments, the hinge and the L2 term stay in fp32.

    Shape:
        images (N, 3, H, W) in [0, 1], target (N, C) multi-hot -> adversarial images (N, 3, H, W) in [0, 1].

    Example:
        >>> adv = MLCW(max_iter=100, binary_search_steps=3)(model, images, torch.ones(len(images), num_labels))
    """

    def __init__(
        self,
        max_iter: int = 1000,
        binary_search_steps: int = 10,
        initial_const: float = 1e5,
        lr: float = 0.01,
        abort_early: bool = True,
        check_every: int = 100,
        confidence: float = 0.0,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.max_iter = int(check_positive("max_iter", max_iter))
        self.binary_search_steps = int(check_positive("binary_search_steps", binary_search_steps))
        self.initial_const = check_positive("initial_const", initial_const)
        self.lr = check_positive("lr", lr)
        self.abort_early = bool(abort_early)
        self.check_every = int(check_positive("check_every", check_every))
        self.confidence = check_positive("confidence", confidence, allow_zero=True)

    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        n = images.shape[0]
        dev = images.device
        sign = 2.0 * target - 1.0
        w0 = torch.atanh((2.0 * images - 1.0) * _TANH_SHRINK)
        w = torch.zeros_like(images)
        m1, m2 = torch.zeros_like(images), torch.zeros_like(images)
        adam_t = torch.zeros(n, dtype=torch.long, device=dev)
        const = torch.full((n,), self.initial_const, dtype=torch.float64, device=dev)
        lower = torch.zeros(n, dtype=torch.float64, device=dev)
        upper = torch.full((n,), _NO_BOUND, dtype=torch.float64, device=dev)
        search_step = torch.zeros(n, dtype=torch.long, device=dev)
        inner = torch.zeros(n, dtype=torch.long, device=dev)
        prev = torch.full((n,), float("inf"), device=dev)
        step_reached = torch.zeros(n, dtype=torch.bool, device=dev)
        iterations = torch.zeros(n, dtype=torch.long, device=dev)
        best_adv = images.clone()
        best_score = torch.full((n,), -1, dtype=torch.long, device=dev)
        best_l2 = torch.full((n,), float("inf"), device=dev)
        best_logits = torch.zeros_like(target)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        beta1, beta2, eps = 0.9, 0.999, 1e-8

        while not bool(done.all()):
            idx = (~done).nonzero().squeeze(1)
            x, wi = images[idx], w[idx].requires_grad_(True)
            with torch.enable_grad():
                adv = (torch.tanh(w0[idx] + wi) + 1.0) / 2.0
                logits = self.forward(model, adv)
                hinge = (self.confidence - sign[idx] * (torch.sigmoid(logits) - 0.5)).clamp_min(0).sum(1)
                l2 = (adv - x).flatten(1).pow(2).sum(1)
                loss = const[idx].float() * hinge + l2
                (grad,) = torch.autograd.grad(loss.sum(), wi)
            adv, logits, loss, l2 = adv.detach(), logits.detach(), loss.detach(), l2.detach()

            # best so far: most target labels shown, then smallest L2
            keep_best(idx, adv, logits, l2, target, best_adv, best_logits, best_score, best_l2)
            reached = shows_target(logits, target[idx])
            step_reached[idx] |= reached
            iterations[idx] += 1

            # per-sample stall check, every check_every iterations of the current search step
            checking = inner[idx] % self.check_every == 0
            stalled = checking & (loss > prev[idx] * 0.9999) & self.abort_early
            prev[idx[checking]] = loss[checking]

            # Adam step (torch.optim.Adam's formula, with a per-sample step count)
            go = ~stalled
            gi = idx[go]
            adam_t[gi] += 1
            t = adam_t[gi].to(torch.float32).view(-1, *([1] * (images.ndim - 1)))
            m1[gi] = beta1 * m1[gi] + (1 - beta1) * grad[go]
            m2[gi] = beta2 * m2[gi] + (1 - beta2) * grad[go].square()
            denom = (m2[gi] / (1 - beta2**t)).sqrt() + eps
            w[gi] = w[gi] - self.lr * (m1[gi] / (1 - beta1**t)) / denom
            inner[idx] += 1

            if self.early_stop:
                done[idx[reached]] = True
            ends = (stalled | (inner[idx] >= self.max_iter)) & ~done[idx]
            if bool(ends.any()):
                self._next_search_step(idx[ends], step_reached, const, lower, upper)
                ei = idx[ends]
                search_step[ei] += 1
                done[ei] = search_step[ei] >= self.binary_search_steps
                w[ei], m1[ei], m2[ei] = 0.0, 0.0, 0.0
                adam_t[ei], inner[ei], prev[ei], step_reached[ei] = 0, 0, float("inf"), False

        self.last_const_bounds = (lower, upper)  # diagnostics: each sample's final binary-search bracket on c
        return AttackResult(
            adv=best_adv,
            iterations=iterations,
            reached=shows_target(best_logits, target),
            loss=self.loss_fn(best_logits, target),
        )

    @staticmethod
    def _next_search_step(
        ei: torch.Tensor,
        step_reached: torch.Tensor,
        const: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
    ) -> None:
        """The reference's binary-search update of ``c`` for the samples ``ei`` whose search step just ended."""
        ok = step_reached[ei]
        c = const[ei]
        up = torch.where(ok, torch.minimum(upper[ei], c), upper[ei])
        lo = torch.where(ok, lower[ei], torch.maximum(lower[ei], c))
        bounded = up < 1e9
        const[ei] = torch.where(bounded, (lo + up) / 2, torch.where(ok, c, c * 10))
        upper[ei], lower[ei] = up, lo
