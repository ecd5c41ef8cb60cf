"""ML-GCN's label graph: the correlation matrix from training-split statistics and the graph convolution.

Follows the reference ML-GCN code (``gen_A`` / ``gen_adj`` in its util.py, ``GraphConvolution`` in models.py), which
is what produced the published numbers; where the paper text differs (p = 0.2), the code wins (p = 0.25 default).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _as_float64(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = (
        x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite non-negative counts")
    return arr


def check_graph_hyperparameters(tau: float, p: float) -> None:
    """ValueError naming the argument unless 0 <= tau <= 1 and p is finite and > 0."""
    if not 0.0 <= float(tau) <= 1.0:
        raise ValueError(f"tau must be a probability threshold in [0, 1], got {tau!r}")
    if not (math.isfinite(float(p)) and float(p) > 0.0):
        raise ValueError(f"p must be a finite number > 0, got {p!r}")


def correlation_matrix(
    cooccurrence: torch.Tensor | np.ndarray,
    label_counts: torch.Tensor | np.ndarray,
    tau: float = 0.4,
    p: float = 0.25,
) -> torch.Tensor:
    """ML-GCN's re-weighted binary correlation matrix A (C, C), float32.

    Args:
        cooccurrence: (C, C) counts M[i, j] = number of training images showing both labels i and j. The diagonal
            is ignored (set to zero as in the reference's adjacency file), so passing label counts there is fine.
        label_counts: (C,) counts N[i] = number of training images showing label i.
        tau: binarisation threshold on the conditional probability P(j | i) = M[i, j] / N[i] (kept when >= tau).
        p: weight spread over each column's neighbours; the node itself keeps weight 1.

    Steps (reference ``gen_A``): P = M / N row-wise; B = [P >= tau]; A = B * p / (column sums of B + 1e-6);
    A = A + I. A label that never occurs (N[i] = 0) gets an empty row instead of a division by zero.
    """
    check_graph_hyperparameters(tau, p)
    m = _as_float64(cooccurrence, "cooccurrence")
    n = _as_float64(label_counts, "label_counts")
    if m.ndim != 2 or m.shape[0] != m.shape[1] or n.shape != (m.shape[0],):
        raise ValueError(
            f"cooccurrence must be (C, C) and label_counts (C,), got {tuple(m.shape)} and {tuple(n.shape)}"
        )
    m = m.copy()
    np.fill_diagonal(m, 0.0)
    prob = np.divide(m, n[:, None], out=np.zeros_like(m), where=n[:, None] > 0)
    binary = (prob >= tau).astype(np.float64)
    a = binary * p / (binary.sum(axis=0, keepdims=True) + 1e-6)
    a = a + np.identity(len(n))
    return torch.from_numpy(a).float()


def normalized_adjacency(a: torch.Tensor) -> torch.Tensor:
    """The reference ``gen_adj``: with D = diag(row sums of A)^-1/2, returns (A D)^T D = D A^T D.

    Note the transpose: A is not symmetric, and the reference propagates along A^T; we keep that.
    """
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be a square (C, C) matrix, got shape {tuple(a.shape)}")
    d = torch.diag(a.sum(1).float().pow(-0.5))
    return torch.matmul(torch.matmul(a.float(), d).t(), d)


class GraphConvolution(nn.Module):
    """out = Â · (H · Θ) (+ bias): one graph-convolution layer over the C label nodes (Kipf & Welling form).

    Shape: H (C, in_features), Â (C, C) -> (C, out_features). Initialised uniform ±1/sqrt(out_features) like the
    reference.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = nn.Parameter(torch.empty(self.in_features, self.out_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.out_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        out = adjacency @ (h @ self.weight)
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, bias={self.bias is not None}"
