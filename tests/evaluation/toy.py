"""A tiny dataset and a linear model whose predictions are known exactly, for the attack-loop tests.

Image i is a uniform colour c_i; the model's logits are W · mean_rgb(x) + b. Targets are the model's own
predictions for most rows, with deliberate exceptions (a wrong label, an all-negative row, a difficult label), so
which samples the selection must keep is known by construction.
"""

import torch
from torch import nn

from mlattack.data.base import MultiLabelDataset
from mlattack.defences import Preprocessing

C = 5
W = torch.tensor([[4.0, -2.0, 0.0], [0.0, 4.0, -2.0], [-2.0, 0.0, 4.0], [2.0, 2.0, -3.0], [-3.0, 2.0, 2.0]])
B = torch.tensor([-1.5, -1.5, -1.5, -1.0, -1.2])


class LinearColourNet(nn.Module):
    """logits = W · mean colour + b (differentiable w.r.t. every pixel)."""

    num_classes = C

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, C)
        with torch.no_grad():
            self.linear.weight.copy_(W)
            self.linear.bias.copy_(B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))


class NormColourNet(LinearColourNet):
    """LinearColourNet behind a BatchNorm that is exactly the identity in eval mode (running mean 0, variance 1,
    eps 1e-12, lost in float32): the same predictions, but a network left in train mode normalises by each batch's
    own statistics and moves its running ones, so its judging changes."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x.mean(dim=(2, 3))))


class Identity(Preprocessing):
    """A defence that changes nothing: attacking it plainly, adaptively (BPDA) or not at all
    must agree."""

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def label(self) -> str:
        return "identity"


def colours(n: int) -> torch.Tensor:
    return torch.rand(n, 3, generator=torch.Generator().manual_seed(5))


class ToyColours(MultiLabelDataset):
    """``n`` uniform-colour images; rows 1 (a wrong label), 2 (no positive) and 3 (difficult) are special."""

    name = "toy"

    def __init__(self, split: str = "test", image_size: int = 8, seed: int = 0, n: int = 24, **_) -> None:
        super().__init__(image_size)
        self.class_names = [f"c{j}" for j in range(C)]
        self.colours = colours(n)
        self.colours[2] = 0.0  # black: every logit is its (negative) bias, so the prediction is all-negative
        with torch.no_grad():
            pred = (LinearColourNet()(self.colours[:, :, None, None]) >= 0).float()
        targets = pred.clone()
        targets[1, 0] = 1 - targets[1, 0]  # the model gets row 1 wrong
        targets[2] = 0  # row 2 has no positive label (prediction must then be all-negative too)
        difficult = torch.zeros_like(targets, dtype=torch.bool)
        # row 3: the model predicts label j positive but the annotation marks it difficult -> counts as negative
        j = int(pred[3].argmax())
        targets[3, j] = 0
        difficult[3, j] = True
        self._finalize([f"img{i:03d}" for i in range(n)], targets, difficult)
        self.pred = pred

    def load_image(self, index: int) -> torch.Tensor:
        return self.colours[index][:, None, None].expand(3, self.image_size, self.image_size).clone()
