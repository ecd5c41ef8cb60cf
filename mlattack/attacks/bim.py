"""BIM: iterated FGSM with projection onto the L∞ ball, as AdverTorch's ``LinfBasicIterativeAttack``."""

from __future__ import annotations

from torch import nn

from mlattack.attacks.base import check_count, check_positive
from mlattack.attacks.iterative import IterativePlan, linf_box, sign_step
from mlattack.attacks.iterative_attack import IterativeAttack
from mlattack.attacks.losses import AttackLoss


class BIM(IterativeAttack):
    r"""Basic Iterative Method (Kurakin et al. 2017) towards a multi-label target.

    From ``x`` (no random start), ``nb_iter`` times: ``x ← clip_[0,1](Π_eps(x - eps_iter * sign(∇ₓ loss)))``
    where Π_eps clamps the perturbation to the L∞ box (AdverTorch's ``LinfBasicIterativeAttack(targeted=True)``).

    Distance measure: Linf

    Arguments:
        eps (float): L∞ budget. The study used ``PAPER_EPS`` = 0.1 (default); a later copy used ``LATER_EPS``
            = 0.01. With the default 30 steps of 0.001 no pixel can move more than 0.03 anyway.
        nb_iter (int): number of steps (default 30).
        eps_iter (float): size of each step (default 0.001).
        loss_fn, early_stop, autocast: see :class:`mlattack.attacks.base.Attack`.

    Shape:
        - images: (N, 3, H, W) in [0, 1]; target: (N, C) multi-hot; output: (N, 3, H, W) in [0, 1].

    Example::

        >>> attack = BIM(eps=0.1, nb_iter=30, eps_iter=0.001, early_stop=True)
        >>> result = attack.run(model, images, torch.ones(len(images), num_labels))
        >>> result.adv, result.iterations, result.reached
    """

    norm = "linf"

    PAPER_EPS = 0.1
    LATER_EPS = 0.01

    def __init__(
        self,
        eps: float = PAPER_EPS,
        nb_iter: int = 30,
        eps_iter: float = 0.001,
        loss_fn: AttackLoss | None = None,
        early_stop: bool = False,
        autocast: str | None = None,
    ) -> None:
        super().__init__(loss_fn=loss_fn, early_stop=early_stop, autocast=autocast)
        self.eps = check_positive("eps", eps)
        self.nb_iter = check_count("nb_iter", nb_iter)
        self.eps_iter = check_positive("eps_iter", eps_iter)

    def iterative_plan(self, model: nn.Module) -> IterativePlan:
        return IterativePlan(self.nb_iter, step=sign_step(self.eps_iter), project=linf_box(self.eps))
