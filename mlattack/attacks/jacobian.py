"""Per-label Jacobians w.r.t. the input, vectorised: one forward pass and a vmapped vector-Jacobian product.

ML-DP and MLA-LP need, per sample, the (C, D) matrix of input gradients of C per-label quantities. A Python loop of
C ``backward`` calls repeats the graph traversal overhead C times; ``torch.func.vmap`` over ``vjp`` batches the C
cotangents into one backward pass over a C-times larger batch (``chunk_size`` bounds its memory).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import vjp, vmap


def label_jacobian(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(values, jac)``: ``values = fn(x)`` (N, C) and ``jac[n, c] = d values[n, c] / d x[n]`` (N, C, *x[0].shape).

    ``fn`` must treat samples independently (eval-mode models do), so the gradient of ``values[:, c].sum()`` w.r.t.
    ``x[n]`` is exactly row ``c`` of sample ``n``'s Jacobian.
    """
    x = x.detach()
    with torch.enable_grad():
        values, pullback = vjp(fn, x)
        n, c = values.shape
        cotangents = torch.eye(c, dtype=values.dtype, device=values.device)[:, None, :].expand(c, n, c)
        (jac,) = vmap(pullback, chunk_size=chunk_size)(cotangents)  # (C, N, ...)
    return values.detach(), jac.transpose(0, 1).detach()
