"""How an adversarial image is judged: truncated to 8 bits (as one study driver did) or as floats, with a reason attached
to every sample whose numbers cannot be trusted (non-finite image, logits or input gradient)."""

from __future__ import annotations

import torch
from torch import nn


def quantize_images(adv: torch.Tensor, rule: str) -> torch.Tensor:
    """The images as they are judged: "floor" is ``uint8(x * 255) / 255`` (truncated to 8 bits, as the study's
    ML-GCN VOC2007 driver did in memory), "round" the nearest 8-bit value, "none" the float images the attack
    returned (the study's other drivers: :mod:`mlattack.evaluation.drivers`)."""
    if rule == "none":
        return adv
    scaled = adv.float() * 255.0
    q = torch.floor(scaled) if rule == "floor" else torch.round(scaled)
    return q.clamp(0, 255) / 255.0


def evaluate_adversarial(
    net: nn.Module, adv: torch.Tensor, target: torch.Tensor, loss_fn, grad_finite: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[str]]:
    """fp32 logits of the adversarial images, and per sample why its result is numerically unusable ("" if not).

    A NaN/inf image or logits is plain to see; a NaN input gradient is not (``sign(NaN) == 0`` quietly freezes the
    step). Attacks that tracked their gradients say so in ``grad_finite`` and the images need one forward pass;
    for the others the gradient of the attack loss at the returned image is checked (one forward + backward).
    """
    if grad_finite is None:
        x = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = net(x).float()
            (grad,) = torch.autograd.grad(loss_fn(logits, target).sum(), x)
        grad_finite = torch.isfinite(grad.flatten(1)).all(1)
    else:
        with torch.no_grad():
            logits = net(adv.detach()).float()
    checks = (
        (torch.isfinite(adv.flatten(1)).all(1), "non-finite adversarial image"),
        (torch.isfinite(logits).all(1), "non-finite logits"),
        (grad_finite.to(logits.device), "non-finite input gradient of the attack loss"),
    )
    ok = [c.tolist() for c, _ in checks]
    failure = [
        "; ".join(reason for j, (_, reason) in enumerate(checks) if not ok[j][k]) for k in range(len(adv))
    ]
    return logits.detach(), failure
