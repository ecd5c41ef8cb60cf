"""A network behind a preprocessing defence, and the model an adaptive attack differentiates instead.

:class:`Defended` is the deployed model: ``net(preprocessing.transform(x))`` with the gradient a plain attack gets
(zero through JPEG and bit depth: the defence *masks* the gradient). Every image, attacked or not, is judged by it.

With ``adaptive`` on, attacks run on :meth:`Defended.attack_model` instead (Athalye et al. 2018):

- BPDA: the forward pass is the defence's, the backward pass treats the preprocessing as the identity
  (:class:`StraightThrough`), so the input gradient is the network's gradient at the preprocessed image.
- EOT, for randomised steps (JPEG at a random quality): the logits averaged over ``eot_samples`` independent draws,
  so the attack descends the expected logits rather than one draw's. (Averaging logits rather than per-draw loss
  gradients keeps the attacks' contract, one ``model(x)`` per step; Tramèr et al. 2020 discuss both.)

A defence whose success rates fall only under the plain attack masks gradients; the robustness report shows both.
"""

from __future__ import annotations

import torch
from torch import nn

from mlattack.defences.preprocessing import Preprocessing


class StraightThrough(torch.autograd.Function):
    """BPDA with the identity: forward ``step(x)``, backward passes the incoming gradient through unchanged."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, step: Preprocessing) -> torch.Tensor:  # noqa: D102
        return step.transform(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad, None


class Defended(nn.Module):
    """``net`` behind ``preprocessing`` (module docstring); returns logits, exposes ``num_classes``.

    Args:
        net: the network (image in [0, 1] -> logits).
        preprocessing: the defence's step.
        adaptive: attacks differentiate :meth:`attack_model` (BPDA, and EOT for randomised steps).
        eot_samples: draws averaged per forward pass of the adaptive model (randomised steps only).
    """

    def __init__(
        self, net: nn.Module, preprocessing: Preprocessing, adaptive: bool = False, eot_samples: int = 1
    ):
        super().__init__()
        if int(eot_samples) < 1:
            raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
        self.net, self.preprocessing = net, preprocessing
        self.adaptive, self.eot_samples = bool(adaptive), int(eot_samples)
        self.num_classes = int(net.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocessing(x))

    def attack_model(self) -> nn.Module:
        """What an attack runs on: this model (plain) or its BPDA/EOT twin (adaptive), in this model's mode."""
        return AdaptiveAttackModel(self) if self.adaptive else self

    def settings(self) -> dict[str, object]:
        """The defence as run params: the step's settings, ``adaptive`` and (randomised steps) ``eot_samples``."""
        out = {**self.preprocessing.settings(), "adaptive": self.adaptive}
        if self.preprocessing.randomised:
            out["eot_samples"] = self.eot_samples
        return out


class AdaptiveAttackModel(nn.Module):
    """The model an adaptive attack differentiates: BPDA through the step, logits averaged over EOT draws."""

    def __init__(self, defended: Defended) -> None:
        super().__init__()
        self.defended = defended
        self.num_classes = defended.num_classes
        self.training = defended.training  # a new module is in train mode; this one is in the defended one's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.defended
        draws = d.eot_samples if d.preprocessing.randomised else 1
        logits = [d.net(StraightThrough.apply(x, d.preprocessing)) for _ in range(draws)]
        return logits[0] if draws == 1 else torch.stack(logits).mean(0)
