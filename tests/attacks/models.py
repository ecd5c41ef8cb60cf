"""Tiny deterministic multi-label classifiers (logits out) shared by the attack tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """conv-BN-ReLU-pool-linear on (3, S, S) images; BatchNorm makes train/eval mode observable."""

    def __init__(self, num_classes: int, channels: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(channels * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.5) / 0.25).flatten(1))


class TinyLinear(nn.Module):
    """logits = scale * W·x + b; a large ``scale`` makes a few steps enough to flip labels."""

    def __init__(self, num_classes: int, size: int, scale: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * size * size, num_classes)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(x.flatten(1))


def make_cnn(num_classes: int, seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN(num_classes)
    with torch.no_grad():  # non-trivial running statistics so that eval-mode BN is not the identity
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def make_linear(num_classes: int, size: int, scale: float = 1.0, seed: int = 0) -> TinyLinear:
    torch.manual_seed(seed)
    return TinyLinear(num_classes, size, scale).eval()


def make_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def assert_batch_equals_one_by_one(attack, model, images, target) -> tuple:
    """Attacking the batch gives each sample's one-by-one result (1e-5) and repeats exactly; returns
    ``(batch result, one-by-one results)`` for attack-specific checks."""
    batch = attack.run(model, images, target)
    ones = [attack.run(model, images[i : i + 1], target[i : i + 1]) for i in range(len(images))]
    for i, one in enumerate(ones):
        torch.testing.assert_close(one.adv, batch.adv[i : i + 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(attack.run(model, images, target).adv, batch.adv, atol=0, rtol=0)
    return batch, ones
