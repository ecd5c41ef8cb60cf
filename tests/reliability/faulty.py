"""Networks that go numerically wrong on some inputs, as a real network can (overflow, 0·∞ in a backward pass)."""

import torch

from tests.evaluation.toy import LinearColourNet


class NaNLogitsAbove(LinearColourNet):
    """The toy linear model, but its logits are NaN for an image with any pixel above ``limit``."""

    limit = 0.9

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        bad = x.flatten(1).amax(1) > self.limit
        return torch.where(bad[:, None], torch.full_like(logits, float("nan")), logits)


class NaNGradientBelow(LinearColourNet):
    """Finite logits everywhere, but a NaN input gradient where the mean red is at most ``limit``.

    The classic ``torch.where`` pitfall: the branch not taken, sqrt of a negative number, is NaN, and its zero
    upstream gradient times that NaN derivative is NaN.
    """

    limit = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0].mean(dim=(1, 2)) - self.limit
        bonus = torch.where(red > 0, torch.sqrt(red), torch.zeros_like(red))
        return super().forward(x) + 0.1 * bonus[:, None]
