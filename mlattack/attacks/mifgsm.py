"""MI-FGSM: BIM with momentum on L1-normalised gradients, as AdverTorch's ``LinfMomentumIterativeAttack``."""

from __future__ import annotations

from torch import nn

from mlattack.attacks.base import check_count, check_positive
from mlattack.attacks.iterative import IterativePlan, linf_box, momentum_step
from mlattack.attacks.iterative_attack import IterativeAttack
from mlattack.attacks.losses import AttackLoss


class MIFGSM(IterativeAttack):
    r"""Momentum Iterative FGSM (Dong et al. 2018), L∞, towards a multi-label target.

    From ``x`` with ``g = 0``, ``nb_iter`` times: ``g ← decay_factor · g + ∇ₓ loss / ‖∇ₓ loss‖₁`` and
    ``x ← clip_[0,1](Π_eps(x - eps_iter * sign(g)))`` (AdverTorch's ``LinfMomentumIterativeAttack(targeted=True)``).

    Distance measure: Linf

    Arguments:
        eps (float): L∞ budget. The study used ``PAPER_EPS`` = 0.3 (default); a later copy used ``LATER_EPS``
            = 0.01. With the default 30 steps of 0.001 no pixel can move more than 0.03 anyway.
        nb_iter (int): number of steps (default 30).
        eps_iter (float): size of each step (default 0.001).
        decay_factor (float): momentum decay μ (default 1.0; 0 gives BIM).
        loss_fn, early_stop, autocast: see :class:`mlattack.attacks.base.Attack`.

    Shape:
        - images: (N, 3, H, W) in [0, 1]; target: (N, C) multi-hot; output: (N, 3, H, W) in [0, 1].

    Example::

        >>> attack = MIFGSM(eps=0.3, nb_iter=30, eps_iter=0.001, decay_factor=1.0)
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
        decay_factor: float = 1.0,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.eps = check_positive("eps", eps)
        self.nb_iter = check_count("nb_iter", nb_iter)
        self.eps_iter = check_positive("eps_iter", eps_iter)
        self.decay_factor = check_positive("decay_factor", decay_factor, allow_zero=True)

    def iterative_plan(self, model: nn.Module) -> IterativePlan:
        step = momentum_step(self.eps_iter, self.decay_factor)
        return IterativePlan(self.nb_iter, step=step, project=linf_box(self.eps), momentum=True)
