"""Per-label Jacobians w.r.t. the input: one forward pass, then C pullbacks of one-hot cotangents.

ML-DP and MLA-LP need, per sample, the (C, D) matrix of input gradients of C per-label quantities. Three ways to get
it from one forward pass, all pulling back the same one-hot cotangents (``benchmarks/jacobian_speed.py`` times them):

- ``"loop"``: C plain ``autograd.grad`` calls on the retained graph, one label at a time (least memory);
- ``"vmap"``: ``torch.func.vmap`` over ``vjp``, one backward over a C-times larger batch (``chunk_size`` bounds it);
- ``"batched"``: ``autograd.grad(..., is_grads_batched=True)``, autograd's own vmap over the retained graph.

Measured (CPU, 2 samples at 224², one thread: EfficientNet-Lite0 loop 1.2 s, vmap 5.1 s, whose depthwise-conv and
BatchNorm batching rules copy and recompute; ResNet-18 2.4 s against 3.2 s. H200, ResNet-101 448², batch 32, C = 20:
a whole ML-DP iteration 702 ms with the loop against 1,136 ms with vmap), so every device defaults to the loop. The
network matters as much as the device: on three plain strided convolutions at 448² (benchmarks/host_share.py's
CheapNet, CPU) vmap took 2.4x the floor against the loop's 12.4x. ``MLATTACK_JACOBIAN=vmap|batched|loop``
overrides the default for every call.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.func import vjp, vmap

STRATEGIES = ("loop", "vmap", "batched")
#: default per device type, from the measurements above; a device type not listed takes the loop as well
DEFAULTS = {"cpu": "loop", "cuda": "loop"}
ENV = "MLATTACK_JACOBIAN"


def default_strategy(device: torch.device) -> str:
    """The strategy ``label_jacobian`` uses on ``device`` when none is given: ``$MLATTACK_JACOBIAN`` or DEFAULTS."""
    chosen = os.environ.get(ENV) or DEFAULTS.get(device.type, "loop")
    if chosen not in STRATEGIES:
        raise ValueError(f"{ENV}={chosen!r}: expected one of {', '.join(STRATEGIES)}")
    return chosen


def label_jacobian(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    chunk_size: int | None = None,
    strategy: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(values, jac)``: ``values = fn(x)`` (N, C) and ``jac[n, c] = d values[n, c] / d x[n]`` (N, C, *x[0].shape).

    ``fn`` must treat samples independently (eval-mode models do), so the gradient of ``values[:, c].sum()`` w.r.t.
    ``x[n]`` is exactly row ``c`` of sample ``n``'s Jacobian. ``chunk_size``: labels per batched pullback ("vmap",
    "batched"; the loop takes one at a time). ``strategy``: one of STRATEGIES, None for :func:`default_strategy`.
    """
    strategy = strategy or default_strategy(x.device)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    x = x.detach()
    with torch.enable_grad():
        if strategy == "vmap":
            values, pullback = vjp(fn, x)
            n, c = values.shape
            cotangents = torch.eye(c, dtype=values.dtype, device=values.device)[:, None, :].expand(c, n, c)
            (jac,) = vmap(pullback, chunk_size=chunk_size)(cotangents)  # (C, N, ...)
            return values.detach(), jac.transpose(0, 1).detach()
        xi = x.requires_grad_(True)
        values = fn(xi)
        n, c = values.shape
        onehot = torch.eye(c, dtype=values.dtype, device=values.device)
        if strategy == "loop":
            rows = [
                torch.autograd.grad(values, xi, onehot[k].expand(n, c), retain_graph=k < c - 1)[0]
                for k in range(c)
            ]
            return values.detach(), torch.stack(rows, 1)
        step = chunk_size or c
        parts = []
        for lo in range(0, c, step):
            cot = onehot[lo : lo + step, None, :].expand(-1, n, c)
            last = lo + step >= c
            parts.append(
                torch.autograd.grad(values, xi, cot, retain_graph=not last, is_grads_batched=True)[0]
            )
        return values.detach(), torch.cat(parts, 0).transpose(0, 1)
