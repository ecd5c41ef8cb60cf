"""Adversarial training against "showing many labels": the training batch is attacked on the fly by any attack
(the same ``class_path``/``init_args`` as an attack config), towards the attack protocol's target (every label
shown), and the network learns from the adversarial images.

Objectives (``objective``):

- ``pgd``: PGD-AT (Madry et al. 2018). The loss is ``(1 - w) · L(f(x), y) + w · L(f(x_adv), y)`` with
  ``w = adversarial_weight``: 1 trains on adversarial images only (Madry), 0.5 is Goodfellow et al.'s mixed batch.
- ``trades``: a multi-label TRADES (Zhang et al. 2019): ``L(f(x), y) + β · KL(σ(f(x)) ‖ σ(f(x_adv)))``, the KL
  taken per label between the two Bernoulli distributions and averaged over labels and samples (the clean loss is a
  mean over labels too, so β weighs like TRADES' β). Both terms carry gradient through the clean and the adversarial
  forward pass, as in TRADES.

``L`` is the module's own training loss (difficult labels as ``model.difficult`` says).

The attack runs with the network in eval mode and its parameters frozen (:func:`mlattack.attacks.base.frozen_eval`),
both restored before the training forward pass. Eval mode because (1) in train mode every attack step would update
BatchNorm's running statistics with half-made adversarial batches, ``nb_iter`` times per training step, and (2) batch
statistics couple the samples of a batch, so each sample's attack would depend on its neighbours; the attack thus
sees the network as the attack protocol (and any deployed model) does. Frozen parameters and the attack's
``autograd.grad`` w.r.t. the input only keep its gradients out of the parameters' ``.grad``; the adversarial images
are detached. Under mixed precision the attack's forward passes run in Lightning's autocast like the training
step's, except an attack marked ``precision_sensitive`` (ML-CW, ML-DP, MLA-LP), which runs in fp32.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mlattack.attacks.base import Attack, check_positive

Objective = Literal["pgd", "trades"]
OBJECTIVES = ("pgd", "trades")
#: prefix of the registered model version's tags that describe the adversarial training
TAG_PREFIX = "mlattack.adversarial."


def bernoulli_kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """Per-label KL(Bern(σ(a)) ‖ Bern(σ(b))) from logits a (clean) and b (adversarial), shape (N, C), computed
    with log-sigmoids so that saturated logits stay finite."""
    a, b = clean_logits.float(), adv_logits.float()
    p = torch.sigmoid(a)
    return p * (F.logsigmoid(a) - F.logsigmoid(b)) + (1.0 - p) * (F.logsigmoid(-a) - F.logsigmoid(-b))


class AdversarialTraining:
    """How ``mlattack fit`` trains adversarially (``model.adversarial``; module docstring).

    Args:
        attack: the inner attack (any :class:`~mlattack.attacks.base.Attack`: ``class_path`` + ``init_args``, or
            the path of an attack config such as ``configs/attack/pgd.yaml``). Its target is every label shown.
        objective: ``pgd`` (PGD-AT, optionally mixed with clean images) or ``trades``.
        adversarial_weight: for ``pgd``, the weight ``w`` of the adversarial loss (1: adversarial images only).
        beta: for ``trades``, the weight of the clean-vs-adversarial divergence.
    """

    def __init__(
        self, attack: Attack, objective: Objective = "pgd", adversarial_weight: float = 1.0, beta: float = 6.0
    ) -> None:
        if not isinstance(attack, Attack):
            raise ValueError(f"adversarial.attack must be an mlattack attack, got {type(attack).__name__}")
        if objective not in OBJECTIVES:
            raise ValueError(f"adversarial.objective must be one of {list(OBJECTIVES)}, got {objective!r}")
        w = float(adversarial_weight)
        if not 0.0 < w <= 1.0:
            raise ValueError(f"adversarial.adversarial_weight must be in (0, 1], got {adversarial_weight!r}")
        self.attack, self.objective, self.adversarial_weight = attack, objective, w
        self.beta = check_positive("adversarial.beta", beta, allow_zero=True)

    def adversarial_images(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The attack's images for ``images`` (target: every label shown), detached; ``net`` is left as found."""
        target = torch.ones(len(images), int(net.num_classes), device=images.device)
        if self.attack.precision_sensitive:
            with torch.autocast(device_type=images.device.type, enabled=False):
                return self.attack(net, images, target).detach()
        return self.attack(net, images, target).detach()

    def loss(self, module: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        """The training loss of one batch and its parts: ``loss`` (what is minimised), ``clean`` and
        ``adversarial`` (the loss on each kind of image) and, for TRADES, ``divergence``."""
        images, target, difficult = batch["image"], batch["target"], batch["difficult"]
        adv = self.adversarial_images(module.net, images)
        if self.objective == "pgd" and self.adversarial_weight == 1.0:
            adv_loss = module.compute_loss(module(adv), target, difficult)
            return {"loss": adv_loss, "adversarial": adv_loss}
        logits = module(torch.cat([images, adv]))  # one pass: BatchNorm sees clean and adversarial together
        clean_logits, adv_logits = logits[: len(images)], logits[len(images) :]
        clean = module.compute_loss(clean_logits, target, difficult)
        adv_loss = module.compute_loss(adv_logits, target, difficult)
        if self.objective == "pgd":
            w = self.adversarial_weight
            return {"loss": (1.0 - w) * clean + w * adv_loss, "clean": clean, "adversarial": adv_loss}
        divergence = bernoulli_kl(clean_logits, adv_logits).mean()
        return {"loss": clean + self.beta * divergence, "clean": clean, "adversarial": adv_loss,
                "divergence": divergence}  # fmt: skip

    def tags(self) -> dict[str, str]:
        """The settings as registry tags (``mlattack.adversarial.objective``, ``...attack.eps``, ...)."""
        out = {"objective": self.objective}
        if self.objective == "pgd":
            out["adversarial_weight"] = repr(self.adversarial_weight)
        else:
            out["beta"] = repr(self.beta)
        out.update({f"attack.{k}": str(v) for k, v in self.attack.hyperparameters().items()})
        return {f"{TAG_PREFIX}{k}": v for k, v in out.items()}

    def __repr__(self) -> str:
        return f"AdversarialTraining({self.objective}, {self.attack!r})"
