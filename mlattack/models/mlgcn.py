"""ML-GCN (Chen et al., CVPR 2019): image feature · label classifiers produced by a GCN over the label graph.

Contract shared by every network here: input (N, 3, H, W) images in [0, 1], output (N, C) logits; normalisation,
label embeddings and the adjacency live inside the module (the latter two as buffers, so a state_dict or a logged
model carries everything needed to reproduce predictions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from mlattack.models.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone, input_normalisation
from mlattack.models.embeddings import default_label_embeddings, load_label_embeddings
from mlattack.models.graph import (
    GraphConvolution,
    check_graph_hyperparameters,
    correlation_matrix,
    normalized_adjacency,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MLGCN"]


class MLGCN(nn.Module):
    """Trunk → global max pool → feature f (F); GCN: embeddings (C, D) → hidden (LeakyReLU 0.2) → W (C, F);
    logits = f · Wᵀ.

    Arguments:
        num_classes: C.
        backbone: trunk name (``resnet101`` as in the paper; ``tiny`` for the CPU demo), see ``build_backbone``.
        backbone_weights: ImageNet weights file for the trunk (else the torch hub cache, else random + warning).
        label_embeddings: a ``.npy`` or reference-format pickle (C×D). None: the shipped embeddings for ``dataset``
            when available, else one-hot (see ``mlattack.models.embeddings``).
        dataset: dataset name, only used to pick shipped embeddings.
        tau, p: correlation-matrix threshold and re-weighting (reference code: 0.4, 0.25).
        hidden_dim: width of the first graph convolution (1024 in the paper).

    The adjacency is the identity until :meth:`set_label_graph` is given the training split's statistics (the
    LightningModule does this before fitting); afterwards it is saved and restored with the state_dict.

    Shape: (N, 3, H, W) in [0, 1] -> (N, C) logits.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        backbone_weights: str | None = None,
        label_embeddings: str | None = None,
        dataset: str | None = None,
        tau: float = 0.4,
        p: float = 0.25,
        hidden_dim: int = 1024,
    ) -> None:
        super().__init__()
        if int(num_classes) <= 0:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if int(hidden_dim) <= 0:
            raise ValueError(f"hidden_dim must be a positive integer, got {hidden_dim!r}")
        check_graph_hyperparameters(tau, p)  # now, not at set_label_graph when the fit starts
        self.num_classes, self.tau, self.p = int(num_classes), float(tau), float(p)
        self.dataset = dataset
        self.backbone, features = build_backbone(backbone, backbone_weights)
        if label_embeddings is not None:
            emb = load_label_embeddings(label_embeddings)
            if emb.shape[0] != self.num_classes:
                raise ValueError(
                    f"{Path(label_embeddings)}: has {emb.shape[0]} label embeddings, expected one per class "
                    f"({self.num_classes})"
                )
        else:
            emb = default_label_embeddings(self.num_classes, dataset)
        self.register_buffer("label_embeddings", emb.float().clone())
        self.register_buffer("adjacency", torch.eye(self.num_classes))
        mean, std = input_normalisation(backbone)  # what the trunk's pretrained weights expect
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.gc1 = GraphConvolution(emb.shape[1], int(hidden_dim))
        self.gc2 = GraphConvolution(int(hidden_dim), features)
        self.relu = nn.LeakyReLU(0.2)

    @torch.no_grad()
    def set_label_graph(
        self, cooccurrence: torch.Tensor | np.ndarray, label_counts: torch.Tensor | np.ndarray
    ) -> None:
        """Set the normalised adjacency from the training split's co-occurrence (C, C) and label counts (C,)."""
        a = correlation_matrix(cooccurrence, label_counts, tau=self.tau, p=self.p)
        if a.shape != self.adjacency.shape:
            raise ValueError(
                f"label statistics are for {a.shape[0]} classes, the model has {self.num_classes}"
            )
        self.adjacency.copy_(normalized_adjacency(a))

    def classifiers(self) -> torch.Tensor:
        """The per-label classifier matrix W (C, F) produced by the two graph convolutions."""
        h = self.relu(self.gc1(self.label_embeddings, self.adjacency))
        return self.gc2(h, self.adjacency)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        feature = self.backbone(x).amax(dim=(2, 3))  # global max pooling, as the reference's MaxPool2d(14)
        return feature @ self.classifiers().t()

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict]:
        """Optimiser groups: the pretrained trunk at lr × backbone_lr_scale, the GCN at lr (reference recipe)."""
        groups = [
            {"name": "backbone", "params": [q for q in self.backbone.parameters() if q.requires_grad]},
            {
                "name": "gcn",
                "params": [q for q in (*self.gc1.parameters(), *self.gc2.parameters()) if q.requires_grad],
            },
        ]
        groups[0]["lr"], groups[1]["lr"] = lr * backbone_lr_scale, lr
        return [g for g in groups if g["params"]]
