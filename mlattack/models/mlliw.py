"""ML-LIW: an ImageNet classifier's trunk with a new C-way linear layer, trained with the LIW ranking loss.

Follows the group's reference (``Inceptionv3Rank``): Inception-v3, backbone frozen, only the last layer trained,
input normalised as (x − 0.5)/0.5. Two deliberate differences. The trunk is built with ``transform_input=False``:
the reference left torchvision's ImageNet re-scaling switched on after its own (x − 0.5)/0.5, which squeezes the
[−1, 1] input that Google's Inception weights were trained on; here the trunk gets exactly that input. And there is
no dropout before the last layer, which changes nothing: the reference model sat in eval mode (dropout = identity)
from its first validation on. The output is logits: the loss and the metrics apply sigmoid themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from mlattack.models.backbones import build_backbone


class MLLIW(nn.Module):
    """Trunk → global average pool → Linear(F, C).

    Arguments:
        num_classes: C.
        backbone: trunk name (``inception_v3`` as in the paper, input ≥ 75 px; ``tiny`` for the CPU demo).
        backbone_weights: ImageNet weights file for the trunk (else the torch hub cache, else random + warning).
        freeze_backbone: keep the trunk fixed (no gradients, always in eval mode so BatchNorm statistics stay the
            pretrained ones even while the module trains). Set False to fine-tune it.
        dataset: name of the data source it is trained on (recorded; ML-LIW uses no label prior).

    Shape: (N, 3, H, W) in [0, 1] -> (N, C) logits.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "inception_v3",
        backbone_weights: str | None = None,
        freeze_backbone: bool = True,
        dataset: str | None = None,
    ) -> None:
        super().__init__()
        if int(num_classes) <= 0:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.dataset = dataset  # recorded only: ML-LIW has no label prior (the CLI links it from the data source)
        self.freeze_backbone = bool(freeze_backbone)
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
