"""FGSM: one signed-gradient step (Goodfellow et al. 2015), as AdverTorch's ``GradientSignAttack``."""

from __future__ import annotations

from torch import nn

from mlattack.attacks.base import check_positive
from mlattack.attacks.iterative import IterativePlan, sign_step
from mlattack.attacks.iterative_attack import IterativeAttack
from mlattack.attacks.losses import AttackLoss


class FGSM(IterativeAttack):
    r"""Fast Gradient Sign Method towards a multi-label target.

    ``x_adv = clip_[0,1](x - eps * sign(∇ₓ loss(x, target)))``: one step that descends the attack loss
    (AdverTorch's ``GradientSignAttack(targeted=True)``).

    Distance measure: Linf

    Arguments:
        eps (float): size of the step, i.e. the L∞ budget. The study used ``PAPER_EPS`` = 0.3 (default); a later
            copy of its code used ``LATER_EPS`` = 0.03.
        loss_fn, early_stop, autocast: see :class:`mlattack.attacks.base.Attack`. With ``early_stop`` a sample
            that already shows the target is returned unchanged (``iterations`` = 0).

    Shape:
        - images: (N, 3, H, W) in [0, 1]; target: (N, C) multi-hot; output: (N, 3, H, W) in [0, 1].

    Example::

        >>> attack = FGSM(eps=FGSM.LATER_EPS)
        >>> adv = attack(model, images, torch.ones(len(images), num_labels))  # show every label
    """

    norm = "linf"

    PAPER_EPS = 0.3
    LATER_EPS = 0.03

    def __init__(
        self,
        eps: float = PAPER_EPS,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.eps = check_positive("eps", eps)

    def iterative_plan(self, model: nn.Module) -> IterativePlan:
        # the step has L∞ norm eps exactly, so no projection is needed (as in AdverTorch)
        return IterativePlan(1, step=sign_step(self.eps))
