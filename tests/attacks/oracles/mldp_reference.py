"""Test oracle: the study's ML-DP control flow (``attacks/ml_deepfool_pytorch.py``), re-implemented in NumPy.

Written from a reading of the study's code, not from mlattack's: torch only computes the model's sigmoid outputs and
their per-label input gradients (one backward per label, as the study does); everything else is NumPy with the study's
dtypes (float32 gradients, outputs and solve, a float64 running perturbation). Targets are +-1 as in the study.

The flow, per batch: ``pred`` holds the +-1 prediction of each sample's best image (at first the clean one). While an
iteration is left and some sample's ``pred`` differs from its target: linearise every sample at its current image
``clip(x + total)``; each sample whose ``pred`` is not yet its target solves ``P^T r = q`` (``P = -y * grad``,
``q = y * (p - 0.5)``, i.e. every label aimed at exactly 0.5) with ``r = P (P^T P)^{-1} q`` after removing labels
whose Gram row is all zero, and is left alone this iteration when the inverse fails; then every sample's new image
replaces its best when it shows more target labels, or as many with a smaller L2 norm of the image itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class OracleRun:
    """The best images and the places where the study's peculiar branches were taken."""

    adv: np.ndarray  # (N, 3, H, W) float32
    iterations: int = 0
    singular: list[tuple[int, int]] = field(
        default_factory=list
    )  # (iteration, sample): inverse failed, no step
    dropped: list[tuple[int, int, tuple[int, ...]]] = field(
        default_factory=list
    )  # all-zero Gram rows removed
    # (iteration, sample) where an image with as many target labels won by a smaller image norm although its
    # perturbation was not smaller than the best one's (a perturbation-norm rule would have kept the old best)
    image_norm_wins: list[tuple[int, int]] = field(default_factory=list)


def _outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(np.asarray(x, dtype=np.float32)))).numpy()


def _gradients(model: nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-label input gradients of the sigmoid outputs, (N, L, 3, H, W), by one backward per label; and the outputs."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32)).requires_grad_(True)
    with torch.enable_grad():
        out = torch.sigmoid(model(xt))
        rows = []
        for label in range(out.shape[1]):
            onehot = torch.zeros_like(out)
            onehot[:, label] = 1.0
            (g,) = torch.autograd.grad(out, xt, onehot, retain_graph=True)
            rows.append(g.numpy())
    return np.stack(rows, axis=1), out.detach().numpy()


def _as_pm1(outputs: np.ndarray) -> np.ndarray:
    return np.where(outputs >= 0.5, 1.0, -1.0).astype(np.float32)


def reference_mldp(
    model: nn.Module, images: np.ndarray, y_target: np.ndarray, max_iter: int = 20
) -> OracleRun:
    """The study's ML-DP on one batch: ``images`` float32 (N, 3, H, W) in [0, 1], ``y_target`` (N, L) in {-1, +1}."""
    model.eval()
    x = np.asarray(images, dtype=np.float32)
    y = np.asarray(y_target, dtype=np.float32)
    n, labels = y.shape
    run = OracleRun(adv=x.copy())
    total = np.zeros(x.shape)  # float64, as np.zeros makes it
    pred = _as_pm1(_outputs(model, x))
    current = x.copy()
    it = 0
    while it < max_iter and not np.array_equal(pred, y):
        grads, outs = _gradients(model, current)
        for i in range(n):
            if np.array_equal(pred[i], y[i]):
                continue
            a = (grads[i].reshape(labels, -1) * (-y[i])[:, None]).T  # (D, L): column l is -y_l * grad_l
            b = (y[i] * outs[i] - y[i] * 0.5).reshape(-1, 1)
            gram = a.T @ a
            zero = [lab for lab in range(labels) if not gram[lab].any()]
            if zero:
                run.dropped.append((it, i, tuple(zero)))
                a, b = np.delete(a, zero, axis=1), np.delete(b, zero, axis=0)
            try:
                inv = np.linalg.inv(a.T @ a)
            except np.linalg.LinAlgError:
                run.singular.append((it, i))
                continue
            total[i] += (a @ inv @ b).reshape(x.shape[1:])
        current = np.clip(x + total, 0.0, 1.0)
        new = _as_pm1(_outputs(model, current))
        had, has = (pred == y).sum(1), (new == y).sum(1)
        for i in range(n):
            by_norm = np.linalg.norm(current[i]) < np.linalg.norm(run.adv[i])
            if has[i] > had[i] or (has[i] == had[i] and by_norm):
                same = np.array_equal(current[i].astype(np.float32), run.adv[i])
                farther = np.linalg.norm(current[i] - x[i]) >= np.linalg.norm(run.adv[i] - x[i])
                if has[i] == had[i] and farther and not same:
                    run.image_norm_wins.append((it, i))
                run.adv[i] = current[i]
                pred[i] = new[i]
        it += 1
    run.iterations = it
    return run
