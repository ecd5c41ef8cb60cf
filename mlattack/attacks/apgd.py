"""ML-APGD: Auto-PGD (Croce & Hein, ICML 2020), the step-size-free attack inside AutoAttack, towards a multi-label
target, L∞ or L2.

Written from the paper's description (Algorithm 1 and Section 3.1). Every piece of state is per sample (step size,
best point, success counters), so a batch gives each sample's one-by-one result. The loss is *descended* (the
paper ascends f; here f = -loss).

One step, k = 1..nb_iter (x(0) is the start)::

    z      = P(x(k-1) - η · dir(∇loss(x(k-1))))                     dir = sign (L∞) or g / ‖g‖₂ (L2)
    x(k)   = z                                                       k = 1
    x(k)   = P(x(k-1) + α (z - x(k-1)) + (1 - α)(x(k-1) - x(k-2)))   k > 1, α = 0.75

P projects onto the eps ball and the pixel range. At each checkpoint w_j (after evaluating x(w_j)), η is halved
and the iterate restarts from the best point seen so far when

    (1) fewer than ρ · (w_j - w_{j-1}) of the steps since w_{j-1} lowered the loss, or
    (2) η was not halved at w_{j-1} and the best loss has not changed since w_{j-1}.

Two readings of the pseudo-code: the decision at w_j is taken once x(w_j) is evaluated (so condition (1) counts
exactly the w_j - w_{j-1} steps since the last checkpoint), and a restart carries no momentum (x(k-1) is set to
the best point as well); the paper leaves both implicit.

Cost: nb_iter forward + input-backward passes and one forward pass at the last iterate (its loss decides
whether it is the best point); the returned image is the best point, so its loss and prediction are known.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from mlattack.attacks.apgd_continuous import run_apgd_continuous
from mlattack.attacks.apgd_steps import checkpoints, halve_step, per_sample_view, restart_where_halved
from mlattack.attacks.base import Attack, AttackResult, FastScheduler, check_count, check_positive
from mlattack.attacks.iterative import l2_ball, linf_box, pnorm, uniform_linf_start
from mlattack.attacks.losses import AttackLoss

NORMS = ("Linf", "L2")


@dataclass
class _State:
    """Per-sample state of one descent; every field's first dimension follows the still-active rows."""

    x: torch.Tensor  # clean images
    t: torch.Tensor  # targets
    delta: torch.Tensor  # x(k) - x
    prev: torch.Tensor  # x(k-1) - x
    grad: torch.Tensor  # gradient at x(k)
    loss: torch.Tensor  # loss at x(k)
    eta: torch.Tensor  # step size
    best_delta: torch.Tensor
    best_grad: torch.Tensor
    best_loss: torch.Tensor
    best_logits: torch.Tensor
    successes: torch.Tensor  # steps since the last checkpoint that lowered the loss
    halved_last: torch.Tensor
    best_loss_last: torch.Tensor
    rows: torch.Tensor  # positions in the caller's batch

    def select(self, keep: torch.Tensor) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name).index_select(0, keep))


class APGD(Attack):
    r"""ML-APGD: Auto-PGD (Croce & Hein 2020) towards a multi-label target; no step size to tune.

    Starts with η = 2·eps, halves it at the checkpoints w_j = ceil(p_j · nb_iter) (p = 0, 0.22, 0.41, 0.57,
    0.70, 0.80, 0.87, 0.93, 0.99) under the paper's two conditions, restarting from the best point; momentum
    α = 0.75. Returns the point with the smallest loss seen (with ``early_stop``: the first that shows the target).

    Distance measure: Linf or L2

    Arguments:
        eps (float): budget in ``norm`` (default 0.3, the study's L∞ budget for PGD and MI-FGSM).
        nb_iter (int): steps per restart; each costs one forward + input-backward pass (default 30, as the
            study's iterative attacks).
        norm (str): "Linf" (default) or "L2".
        rand_init (bool): start from a random point of the eps ball (uniform for L∞, on the sphere for L2)
            instead of the clean image (default False: deterministic and batch-independent).
        n_restarts (int): independent runs from fresh random starts; each sample keeps its best (default 1).
        rho (float): condition (1)'s fraction of loss-lowering steps (default 0.75).
        momentum (float): α, the weight of the new gradient step against the previous move (default 0.75).
        generator (torch.Generator, optional): source of the random starts (``None``: global RNG; fast mode
            draws each sample's from its own, :mod:`mlattack.attacks.apgd_continuous`).
        loss_fn: the loss to descend: the study's summed BCE (default) or e.g.
            :func:`mlattack.attacks.losses.multilabel_margin`. early_stop, autocast: see :class:`Attack`.

    Shape:
        - images: (N, 3, H, W) in [0, 1]; target: (N, C) multi-hot; output: (N, 3, H, W) in [0, 1].

    Example::

        >>> attack = APGD(eps=0.3, nb_iter=30, loss_fn=multilabel_margin)
        >>> adv = attack(model, images, torch.ones(len(images), num_labels))
    """

    def __init__(
        self,
        eps: float = 0.3,
        nb_iter: int = 30,
        norm: str = "Linf",
        rand_init: bool = False,
        n_restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        generator: torch.Generator | None = None,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")
        check_count("n_restarts", n_restarts)
        if n_restarts > 1 and not rand_init:
            raise ValueError(
                "n_restarts > 1 needs rand_init: true (restarts from the clean image are identical)"
            )
        for name, value in (("rho", rho), ("momentum", momentum)):
            if not 0.0 < check_positive(name, value) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        self.eps = check_positive("eps", eps)
        self.nb_iter = check_count("nb_iter", nb_iter)
        self.norm = norm
        self.rand_init = bool(rand_init)
        self.n_restarts = int(n_restarts)
        self.rho, self.momentum = float(rho), float(momentum)
        self.generator = generator

    # -- geometry -------------------------------------------------------------------------------------------
    def _project(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Into the eps ball, then into the pixel range (which only shrinks |delta|, so it stays in the ball)."""
        delta = linf_box(self.eps)(delta) if self.norm == "Linf" else l2_ball(self.eps)(delta)
        return (x + delta).clamp(0.0, 1.0) - x

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "Linf":
            return grad.sign()
        return grad * per_sample_view(1.0 / pnorm(grad, 2).clamp_min(1e-12), grad)

    def start(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """x(0) - x: zeros, or (``rand_init``) a random point of the eps ball drawn from ``generator``."""
        if not self.rand_init:
            return torch.zeros_like(images)
        if self.norm == "Linf":
            return uniform_linf_start(images, self.eps, generator)
        device = generator.device if generator is not None else images.device
        g = torch.randn(images.shape, generator=generator, device=device).to(images.device)
        return self._project(images, g * per_sample_view(self.eps / pnorm(g, 2).clamp_min(1e-12), g))

    def step(
        self, x: Tensor, delta: Tensor, prev: Tensor, grad: Tensor, eta: Tensor, momentum: bool | Tensor
    ) -> Tensor:
        """x(k) - x from x(k-1) - x (``delta``), x(k-2) - x (``prev``), the gradient at x(k-1) and the step sizes
        (N,); with the momentum term where ``momentum`` (k > 1: a bool, or (N,) bool for rows at different k)."""
        z = self._project(x, delta - per_sample_view(eta, delta) * self._direction(grad))
        if momentum is False:
            return z
        zm = self._project(x, delta + self.momentum * (z - delta) + (1.0 - self.momentum) * (delta - prev))
        return zm if momentum is True else torch.where(per_sample_view(momentum, zm), zm, z)

    def fast_scheduler(self) -> FastScheduler | None:
        """Its own scheduler: APGD's per-sample state is richer than a step rule's."""
        return run_apgd_continuous

    # -- the algorithm ----------------------------------------------------------------------------------------
    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        return self.best_of_restarts(images, target, lambda x, t, rows: self._descend(model, x, t))

    def best_of_restarts(self, images: Tensor, target: Tensor, descend: Callable[..., tuple]) -> AttackResult:
        """``n_restarts`` runs of ``descend(x, t, rows)`` (as :meth:`_descend`); each sample keeps its best."""
        n, dev = images.shape[0], images.device
        adv = images.clone()
        best_loss = torch.full((n,), float("inf"), device=dev)
        reached = torch.zeros(n, dtype=torch.bool, device=dev)
        iterations = torch.zeros(n, dtype=torch.long, device=dev)
        grad_finite = torch.ones(n, dtype=torch.bool, device=dev)
        rows = torch.arange(n, device=dev)  # samples still attacked (early stop drops those that succeeded)
        for restart in range(self.n_restarts):
            x, t = images.index_select(0, rows), target.index_select(0, rows)
            r_adv, r_loss, r_reached, r_iters, r_finite, stopped = descend(x, t, rows)
            take = stopped | (r_loss < best_loss[rows]) | (restart == 0)
            idx = rows[take]
            adv[idx], best_loss[idx], reached[idx] = r_adv[take], r_loss[take], r_reached[take]
            iterations[rows] += r_iters
            grad_finite[rows] &= r_finite
            if self.early_stop:
                rows = rows[~stopped]
                if rows.numel() == 0:
                    break
        return AttackResult(
            adv=adv, iterations=iterations, reached=reached, loss=best_loss, grad_finite=grad_finite
        )

    def _descend(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One run from a fresh start: (images, loss, reached, steps, grad_finite, stopped early) per sample."""
        n, dev = x.shape[0], x.device
        adv, out_loss = torch.empty_like(x), torch.empty(n, device=dev)
        reached = torch.zeros(n, dtype=torch.bool, device=dev)
        steps = torch.full((n,), self.nb_iter, dtype=torch.long, device=dev)
        finite = torch.ones(n, dtype=torch.bool, device=dev)
        stopped = torch.zeros(n, dtype=torch.bool, device=dev)

        delta = self.start(x, self.generator)
        loss, grad, logits = self.loss_and_grad(model, x + delta, t)
        finite &= torch.isfinite(grad.flatten(1)).all(1)
        s = _State(
            x=x, t=t, delta=delta, prev=delta, grad=grad, loss=loss,
            eta=torch.full((n,), 2.0 * self.eps, device=dev),
            best_delta=delta, best_grad=grad, best_loss=loss, best_logits=logits,
            successes=torch.zeros(n, dtype=torch.long, device=dev),
            halved_last=torch.zeros(n, dtype=torch.bool, device=dev), best_loss_last=loss,
            rows=torch.arange(n, device=dev),
        )  # fmt: skip
        marks, last_mark = set(checkpoints(self.nb_iter)), 0
        for k in range(self.nb_iter + 1):
            if k > 0:
                s.prev, s.delta = s.delta, self.step(s.x, s.delta, s.prev, s.grad, s.eta, k > 1)
                if k < self.nb_iter:
                    loss, s.grad, logits = self.loss_and_grad(model, s.x + s.delta, s.t)
                    finite[s.rows] &= torch.isfinite(s.grad.flatten(1)).all(1)
                else:  # the last iterate only needs its loss
                    with torch.no_grad():
                        logits = self.forward(model, s.x + s.delta)
                        loss = self.loss_fn(logits, s.t).float()
                s.successes = s.successes + (loss < s.loss).long()
                s.loss = loss
                better = loss < s.best_loss
                s.best_loss = torch.where(better, loss, s.best_loss)
                s.best_logits = torch.where(better[:, None], logits, s.best_logits)
                s.best_delta = torch.where(per_sample_view(better, s.delta), s.delta, s.best_delta)
                # restarts need the gradient at the best point (none is taken at the last iterate)
                if k < self.nb_iter:
                    s.best_grad = torch.where(per_sample_view(better, s.grad), s.grad, s.best_grad)
            if self.early_stop:
                done = self.reached(logits, s.t)
                if bool(done.any()):  # one host sync per step, as the other iterative attacks
                    r = s.rows[done]
                    adv[r], out_loss[r], steps[r] = (s.x + s.delta)[done], loss[done], k
                    reached[r], stopped[r] = True, True
                    s.select((~done).nonzero().squeeze(1))
                    if s.rows.numel() == 0:
                        break
            if k in marks and k < self.nb_iter:
                halve = halve_step(
                    s.successes, k - last_mark, self.rho, s.halved_last, s.best_loss, s.best_loss_last
                )
                restart_where_halved(s, halve)
                s.successes = torch.zeros_like(s.successes)
                s.halved_last, s.best_loss_last, last_mark = halve, s.best_loss, k
        if s.rows.numel() > 0:
            adv[s.rows] = (s.x + s.best_delta).clamp(0.0, 1.0)
            out_loss[s.rows] = s.best_loss
            reached[s.rows] = self.reached(s.best_logits, s.t)
        return adv, out_loss, reached, steps, finite, stopped
