"""PGD: BIM from a uniform random start in the L∞ ball, as AdverTorch's ``LinfPGDAttack``."""

from __future__ import annotations

import torch
from torch import nn

from mlattack.attacks.base import check_count, check_positive
from mlattack.attacks.iterative import (
    IterativePlan,
    linf_box,
    sign_step,
    uniform_linf_start,
)
from mlattack.attacks.iterative_attack import IterativeAttack
from mlattack.attacks.losses import AttackLoss


class PGD(IterativeAttack):
    r"""Projected Gradient Descent (Madry et al. 2018), L∞, towards a multi-label target.

    Start at ``clip_[0,1](x + U(-eps, eps))`` (AdverTorch's ``rand_init_delta``), then ``nb_iter`` times
    ``x ← clip_[0,1](Π_eps(x - eps_iter * sign(∇ₓ loss)))`` (AdverTorch's ``LinfPGDAttack(targeted=True)``).

    Distance measure: Linf

    Arguments:
        eps (float): L∞ budget, also the radius of the random start. The study used ``PAPER_EPS`` = 0.3
            (default); a later copy used ``LATER_EPS`` = 0.01. Note that with the default 30 steps of 0.001 the
            random start, not the steps, dominates the perturbation at eps = 0.3.
        nb_iter (int): number of steps (default 30).
        eps_iter (float): size of each step (default 0.001).
        rand_init (bool): start from the random point (default True); False makes PGD equal BIM.
        generator (torch.Generator, optional): source of the random start; ``None`` draws from the global RNG
            exactly like AdverTorch. A CPU generator also works for CUDA inputs.
        loss_fn, early_stop, autocast: see :class:`mlattack.attacks.base.Attack`.

    Shape:
        - images: (N, 3, H, W) in [0, 1]; target: (N, C) multi-hot; output: (N, 3, H, W) in [0, 1].

    Example::

        >>> attack = PGD(eps=PGD.LATER_EPS, generator=torch.Generator().manual_seed(123))
        >>> adv = attack(model, images, torch.ones(len(images), num_labels))
    """

    norm = "linf"

    PAPER_EPS = 0.3
    LATER_EPS = 0.01

    def __init__(
        self,
        eps: float = PAPER_EPS,
        nb_iter: int = 30,
        eps_iter: float = 0.001,
        rand_init: bool = True,
        generator: torch.Generator | None = None,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.eps = check_positive("eps", eps)
        self.nb_iter = check_count("nb_iter", nb_iter)
        self.eps_iter = check_positive("eps_iter", eps_iter)
        self.rand_init = bool(rand_init)
        self.generator = generator

    def iterative_plan(self, model: nn.Module) -> IterativePlan:
        eps = self.eps
        return IterativePlan(
            self.nb_iter,
            step=sign_step(self.eps_iter),
            project=linf_box(eps),
            start=(lambda images, gen: uniform_linf_start(images, eps, gen)) if self.rand_init else None,
        )
