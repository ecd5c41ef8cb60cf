"""The base class of the gradient-step attacks (FGSM, FGM, BIM, PGD, MI-FGSM, SLIDE, and a new one written the
README's way): a subclass says what one step is, as an :class:`~mlattack.attacks.iterative.IterativePlan`, and gets
both ways to run it: batch by batch (:func:`~mlattack.attacks.iterative.run_plan`) and, in fast mode, continuously
(:func:`~mlattack.attacks.continuous.run_continuous`, early-stopped samples free their slot at once).

It sits above :mod:`~mlattack.attacks.iterative` and :mod:`~mlattack.attacks.continuous`, so neither of those
imports back."""

from __future__ import annotations

from abc import abstractmethod
from functools import partial

import torch
from torch import nn

from mlattack.attacks.base import Attack, AttackResult, FastScheduler
from mlattack.attacks.continuous import run_continuous
from mlattack.attacks.iterative import IterativePlan, run_plan


class IterativeAttack(Attack):
    """An attack made of an :class:`IterativePlan`: write :meth:`iterative_plan`, inherit the rest.

    A random start is drawn from ``self.generator`` when the subclass keeps one (``None``: the global RNG) in
    :meth:`perturb`; the continuous scheduler draws each sample's from ``(seed, position)`` instead."""

    @abstractmethod
    def iterative_plan(self, model: nn.Module) -> IterativePlan:
        """The step rule, projection, random start and number of steps of this attack on ``model``."""

    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        plan = self.iterative_plan(model)
        return run_plan(self, model, images, target, plan, getattr(self, "generator", None))

    def fast_scheduler(self) -> FastScheduler | None:
        return partial(run_continuous, diagnostics=False)
