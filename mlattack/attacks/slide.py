"""SLIDE: sparse L1 descent, as AdverTorch's ``SparseL1DescentAttack``."""

from __future__ import annotations

import math

import torch
from torch import nn

from mlattack.attacks.base import check_count, check_positive
from mlattack.attacks.iterative import (
    IterativePlan,
    l1_ball,
    laplace_l1_start,
    sparse_l1_step,
)
from mlattack.attacks.iterative_attack import IterativeAttack
from mlattack.attacks.losses import AttackLoss


class SLIDE(IterativeAttack):
    r"""Sparse L1 Descent (Tramèr & Boneh 2019) towards a multi-label target.

    Each of ``nb_iter`` steps moves only the ``1 - l1_sparsity`` fraction of pixels with the largest
    ``|∇ₓ loss|``, each by ``eps_iter / k`` against the gradient sign (step L1 norm ``eps_iter``), then projects
    onto the L1 ball of radius ``eps`` and clips to [0, 1] (AdverTorch's ``SparseL1DescentAttack(targeted=True)``;
    like AdverTorch, pixels already at 0 or 1 are not excluded from the top-k).

    Distance measure: L1

    Arguments:
        eps (float): L1 budget, in pixel units summed over (3, H, W) of [0, 1] images. The study used
            ``PAPER_EPS`` = 300 (default).
        nb_iter (int): number of steps (default 30).
        eps_iter (float): L1 length of each step (default 30).
        l1_sparsity (float): fraction of coordinates left unchanged per step, in [0, 1) (default 0.95).
        rand_init (bool): start from AdverTorch's L1 random point (default False, as in the study).
        generator (torch.Generator, optional): source of that random start (``None``: the global RNG).
        loss_fn, early_stop, autocast: see :class:`mlattack.attacks.base.Attack`.

    Shape:
        - images: (N, 3, H, W) in [0, 1]; target: (N, C) multi-hot; output: (N, 3, H, W) in [0, 1].

    Example::

        >>> attack = SLIDE(eps=300.0, nb_iter=30, eps_iter=30.0, l1_sparsity=0.95)
        >>> adv = attack(model, images, torch.ones(len(images), num_labels))
    """

    norm = "l1"

    PAPER_EPS = 300.0

    def __init__(
        self,
        eps: float = PAPER_EPS,
        nb_iter: int = 30,
        eps_iter: float = 30.0,
        l1_sparsity: float = 0.95,
        rand_init: bool = False,
        generator: torch.Generator | None = None,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.eps = check_positive("eps", eps)
        self.nb_iter = check_count("nb_iter", nb_iter)
        self.eps_iter = check_positive("eps_iter", eps_iter)
        if not (math.isfinite(l1_sparsity) and 0.0 <= l1_sparsity < 1.0):
            raise ValueError(f"l1_sparsity must be in [0, 1), got {l1_sparsity!r}")
        self.l1_sparsity = float(l1_sparsity)
        self.rand_init = bool(rand_init)
        self.generator = generator

    def iterative_plan(self, model: nn.Module) -> IterativePlan:
        eps = self.eps
        return IterativePlan(
            self.nb_iter,
            step=sparse_l1_step(self.eps_iter, self.l1_sparsity),
            project=l1_ball(eps),
            start=(lambda images, gen: laplace_l1_start(images, eps, gen)) if self.rand_init else None,
        )
