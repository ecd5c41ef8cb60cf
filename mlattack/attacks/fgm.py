"""FGM: one L2-normalised gradient step, as AdverTorch's ``GradientAttack``."""

from __future__ import annotations

from torch import nn

from mlattack.attacks.base import check_positive
from mlattack.attacks.iterative import IterativePlan, l2_step
from mlattack.attacks.iterative_attack import IterativeAttack
from mlattack.attacks.losses import AttackLoss


class FGM(IterativeAttack):
    r"""Fast Gradient Method (L2) towards a multi-label target.

    ``x_adv = clip_[0,1](x - eps * g / max(‖g‖₂, 1e-6))`` with ``g = ∇ₓ loss(x, target)``: one step that descends
    the attack loss (AdverTorch's ``GradientAttack(targeted=True)``).

    Distance measure: L2

    Arguments:
        eps (float): L2 length of the step (the clip to [0, 1] can only shorten it). The study used
            ``PAPER_EPS`` = 1.0 (default).
        loss_fn, early_stop, autocast: see :class:`mlattack.attacks.base.Attack`. With ``early_stop`` a sample
            that already shows the target is returned unchanged (``iterations`` = 0).

    Shape:
        - images: (N, 3, H, W) in [0, 1]; target: (N, C) multi-hot; output: (N, 3, H, W) in [0, 1].

    Example::

        >>> attack = FGM(eps=1.0)
        >>> adv = attack(model, images, torch.ones(len(images), num_labels))  # show every label
    """

    norm = "l2"

    PAPER_EPS = 1.0

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
        # like AdverTorch's one-step attack: no ball projection, only the pixel clip
        return IterativePlan(1, step=l2_step(self.eps))
