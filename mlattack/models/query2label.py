"""Query2Label (Liu et al. 2021): one learnable query per label reads the trunk's feature map by cross-attention.

Where ML-GCN couples labels through a fixed graph over label embeddings, Query2Label lets every label's query pick
the image regions it needs (cross-attention to the positionally encoded feature map), optionally lets queries see
each other (self-attention), and classifies each label from its own query with its own weight vector (group FC).

Layout as in the authors' code: a 1x1 projection of the feature map to ``hidden_dim`` when the widths differ, 2-D
sine positional encoding added to the attention *keys* only (not the values), ``encoder_layers`` transformer
encoder layers over the feature tokens, ``decoder_layers`` decoder layers whose query self-attention is removed by
default, post-norm residual blocks with ReLU feed-forward, dropout 0.1. The decoder's first input is the query
embedding itself. Training recipe differences (their asymmetric loss, EMA, OneCycle) live in the configs.

Attention runs with ``need_weights=True`` on purpose: that is ``nn.MultiheadAttention``'s explicit
softmax(QKᵀ/√d)·V path, which ``torch.func.vmap`` batches, so the per-label Jacobian of ML-DP / MLA-LP is one
batched backward pass. The fused kernel (``need_weights=False``) has no batching rule for its CPU backward: vmap
falls back to a loop with a warning, and it was slower at these sizes anyway (Jacobian 1.4 s vs 0.85 s, demo size).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlattack.models.backbones import build_backbone, input_normalisation


def sine_position_encoding(
    h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(h·w, dim) encoding: first half of the channels encodes the row, second half the column, each as
    interleaved sin/cos of the position (normalised to (0, 2π]) at geometric frequencies (temperature 10000)."""
    half = dim // 2
    freq = 10000 ** (2 * (torch.arange(half, device=device, dtype=dtype) // 2) / half)
    ys = (torch.arange(1, h + 1, device=device, dtype=dtype) / h * 2 * math.pi)[:, None] / freq  # (h, half)
    xs = (torch.arange(1, w + 1, device=device, dtype=dtype) / w * 2 * math.pi)[:, None] / freq  # (w, half)
    ys = torch.stack((ys[:, 0::2].sin(), ys[:, 1::2].cos()), dim=2).flatten(1)
    xs = torch.stack((xs[:, 0::2].sin(), xs[:, 1::2].cos()), dim=2).flatten(1)
    return torch.cat((ys[:, None, :].expand(h, w, half), xs[None, :, :].expand(h, w, half)), dim=2).flatten(
        0, 1
    )


class _FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class EncoderLayer(nn.Module):
    """Self-attention over the feature tokens (positions in queries and keys) + feed-forward, post-norm."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = _FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = src + pos
        src = self.norm1(src + self.drop1(self.attn(qk, qk, src, need_weights=True)[0]))
        return self.norm2(src + self.drop2(self.ff(src)))


class DecoderLayer(nn.Module):
    """[Self-attention among label queries] → cross-attention to the feature tokens → feed-forward, post-norm."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float, self_attention: bool) -> None:
        super().__init__()
        self.self_attn = (
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) if self_attention else None
        )
        self.norm0 = nn.LayerNorm(dim) if self_attention else None
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = _FeedForward(dim, ff_dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop0, self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            tgt = self.norm0(tgt + self.drop0(self.self_attn(tgt, tgt, tgt, need_weights=True)[0]))
        attended = self.cross_attn(tgt, memory + pos, memory, need_weights=True)[0]
        tgt = self.norm1(tgt + self.drop1(attended))
        return self.norm2(tgt + self.drop2(self.ff(tgt)))


class GroupFC(nn.Module):
    """Per-label linear head: logit_c = ⟨h_c, w_c⟩ + b_c, one weight vector per label (no weights shared)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (N, C, D) -> (N, C)
        return (h * self.weight).sum(-1) + self.bias


def _positive(name: str, value: int) -> int:
    if int(value) != value or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class Query2Label(nn.Module):
    """Trunk → 1x1 projection → [encoder] → decoder with C label queries → group FC → (N, C) logits.

    Arguments:
        num_classes: C, the number of label queries.
        backbone: trunk name (``resnet101`` as in the paper; ``efficientnet_lite0`` for ImageNet weights that ship
            offline; ``tiny`` for the CPU demo), see :func:`~mlattack.models.backbones.build_backbone`.
        backbone_weights: weights file, ``"random"`` or ``"pretrained"`` (see ``build_backbone``).
        freeze_backbone: keep the trunk fixed and in eval mode (BatchNorm statistics stay the pretrained ones).
        hidden_dim: transformer width (paper: 2048 with ResNet-101).
        num_heads: attention heads (paper: 4); must divide ``hidden_dim``.
        encoder_layers, decoder_layers: paper 1 and 2; 0 encoder layers is allowed.
        ff_dim: feed-forward width (paper: 8192).
        dropout: in attention and feed-forward (paper: 0.1).
        decoder_self_attention: let label queries attend to each other (the paper's code removes it by default).
        dataset: name of the training data source (recorded only).

    Inputs are normalised inside with the statistics the trunk's pretrained weights expect.

    Shape: (N, 3, H, W) in [0, 1] -> (N, C) logits.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        backbone_weights: str | None = None,
        freeze_backbone: bool = False,
        hidden_dim: int = 2048,
        num_heads: int = 4,
        encoder_layers: int = 1,
        decoder_layers: int = 2,
        ff_dim: int = 8192,
        dropout: float = 0.1,
        decoder_self_attention: bool = False,
        dataset: str | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = _positive("num_classes", num_classes)
        dim, heads = _positive("hidden_dim", hidden_dim), _positive("num_heads", num_heads)
        if dim % heads or dim % 4:
            raise ValueError(
                f"hidden_dim must be a multiple of num_heads and of 4 (sine encoding), got {dim} and {heads}"
            )
        if int(encoder_layers) != encoder_layers or int(encoder_layers) < 0:
            raise ValueError(f"encoder_layers must be an integer >= 0, got {encoder_layers!r}")
        decoder_layers, ff_dim = _positive("decoder_layers", decoder_layers), _positive("ff_dim", ff_dim)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dataset = dataset
        self.freeze_backbone = bool(freeze_backbone)
        mean, std = input_normalisation(backbone)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.backbone, features = build_backbone(backbone, backbone_weights)
        self.input_proj = nn.Conv2d(features, dim, 1) if features != dim else nn.Identity()
        self.encoder = nn.ModuleList(
            EncoderLayer(dim, heads, ff_dim, dropout) for _ in range(int(encoder_layers))
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(dim, heads, ff_dim, dropout, bool(decoder_self_attention))
            for _ in range(decoder_layers)
        )
        self.queries = nn.Embedding(self.num_classes, dim)
        self.head = GroupFC(self.num_classes, dim)
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()

    def train(self, mode: bool = True) -> Query2Label:
        """Like ``nn.Module.train``, but a frozen trunk stays in eval mode."""
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def label_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, hidden_dim): each label query after the decoder, the input of its own classifier."""
        fmap = self.input_proj(self.backbone((images - self.mean) / self.std))
        n, d, h, w = fmap.shape
        memory = fmap.flatten(2).transpose(1, 2)  # (N, h·w, D)
        pos = sine_position_encoding(h, w, d, fmap.device, fmap.dtype)[None]
        for layer in self.encoder:
            memory = layer(memory, pos)
        tgt = self.queries.weight[None].expand(n, -1, -1)
        for layer in self.decoder:
            tgt = layer(tgt, memory, pos)
        return tgt

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.label_features(images))

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict]:
        """Optimiser groups: the trunk (when trainable) at lr × backbone_lr_scale, the transformer and head at lr."""
        trunk = {id(p) for p in self.backbone.parameters()}
        groups = [
            {"name": "backbone", "params": [p for p in self.backbone.parameters() if p.requires_grad]},
            {"name": "transformer", "params": [p for p in self.parameters() if id(p) not in trunk]},
        ]
        groups[0]["lr"], groups[1]["lr"] = lr * backbone_lr_scale, lr
        return [g for g in groups if g["params"]]
