"""ML-LIW: an ImageNet classifier's trunk with a new C-way linear layer, trained with the LIW ranking loss.

Follows the group's reference (``Inceptionv3Rank``): Inception-v3, backbone frozen, only the last layer trained,
input normalised as (x − 0.5)/0.5 and then, by default, re-scaled once more as torchvision's pretrained
Inception-v3 does (``transform_input``): ``torchvision.models.inception_v3(pretrained=True)`` switches that on, and
the reference fed it the already (x − 0.5)/0.5-normalised image, so its frozen trunk saw
(x − 0.5)·std/0.25 + (mean − 0.5)/0.5 per channel — a squeezed, shifted version of the [−1, 1] range Google's
weights were trained on. ``transform_input=False`` gives the trunk exactly (x − 0.5)/0.5 instead (a different
victim model from the study's). There is no dropout before the last layer, which changes nothing: the reference
model sat in eval mode (dropout = identity) throughout. The output is logits: the loss and the metrics apply
sigmoid themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from mlattack.models.backbones import build_backbone

# The ImageNet statistics torchvision's Inception3._transform_input converts from.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def inception_transform_input(x: torch.Tensor) -> torch.Tensor:
    """Channel c of an ImageNet-normalised batch -> x_c · std_c/0.5 + (mean_c − 0.5)/0.5, with Python-float
    constants as torchvision computes it, so the result is the same to the last bit in any dtype."""
    channels = [
        x[:, c : c + 1] * (s / 0.5) + (m - 0.5) / 0.5
        for c, (m, s) in enumerate(zip(_IMAGENET_MEAN, _IMAGENET_STD, strict=True))
    ]
    return torch.cat(channels, dim=1)


def resolve_transform_input(transform_input: bool | None, backbone: str) -> bool:
    """None follows torchvision's pretrained model of the trunk: on for Inception-v3 (as the reference ran it)."""
    if transform_input is None:
        return backbone == "inception_v3"
    if not isinstance(transform_input, bool):
        raise ValueError(f"transform_input must be true, false or null, got {transform_input!r}")
    return transform_input


class MLLIW(nn.Module):
    """Trunk → global average pool → Linear(F, C).

    Arguments:
        num_classes: C.
        backbone: trunk name (``inception_v3`` as in the paper, input ≥ 75 px; ``tiny`` for the CPU demo).
        backbone_weights: ImageNet weights file for the trunk (else the torch hub cache, else random + warning).
        freeze_backbone: keep the trunk fixed (no gradients, always in eval mode so BatchNorm statistics stay the
            pretrained ones even while the module trains). Set False to fine-tune it.
        dataset: name of the data source it is trained on (recorded; ML-LIW uses no label prior).
        transform_input: after (x − 0.5)/0.5, apply torchvision's Inception-v3 input re-scaling, as the reference's
            ``inception_v3(pretrained=True)`` did. None (default): on for ``inception_v3``, off for other trunks.

    Shape: (N, 3, H, W) in [0, 1] -> (N, C) logits.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "inception_v3",
        backbone_weights: str | None = None,
        freeze_backbone: bool = True,
        dataset: str | None = None,
        transform_input: bool | None = None,
    ) -> None:
        super().__init__()
        if int(num_classes) <= 0:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        # recorded only: ML-LIW has no label prior (the CLI links it from the data source)
        self.dataset = dataset
        self.freeze_backbone = bool(freeze_backbone)
        self.transform_input = resolve_transform_input(transform_input, backbone)
        self.backbone, features = build_backbone(backbone, backbone_weights)
        self.fc = nn.Linear(features, self.num_classes)
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> MLLIW:
        """Like ``nn.Module.train``, but a frozen trunk stays in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - 0.5) / 0.5
        if getattr(self, "transform_input", False):  # getattr: networks pickled before the option existed
            x = inception_transform_input(x)
        feature = self.backbone(x).mean(dim=(2, 3))
        return self.fc(feature)

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict]:
        """Optimiser groups: the trunk (only when trainable) at lr × backbone_lr_scale, the last layer at lr."""
        groups = [
            {"name": "backbone", "params": [q for q in self.backbone.parameters() if q.requires_grad]},
            {"name": "fc", "params": list(self.fc.parameters())},
        ]
        groups[0]["lr"], groups[1]["lr"] = lr * backbone_lr_scale, lr
        return [g for g in groups if g["params"]]
