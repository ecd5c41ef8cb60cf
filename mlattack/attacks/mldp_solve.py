"""ML-DP's linear step, two ways: the paper's minimum-norm solution and the study's exact-inverse arithmetic.

Both solve, per sample, ``J r = level - p`` for the smallest ``r`` (``J`` the (C, D) Jacobian of the sigmoid outputs
``p`` at the current image). :func:`minimum_norm_step` does it as the algorithm means it: float64 pseudo-inverse,
defined for every rank. :func:`gram_inverse_step` does what the study's code does, bit for bit where it matters:
float32 Gram matrix, labels whose Gram row is exactly zero removed, an exact inverse (NumPy, which inverts in float64
and rounds back to float32) and no step at all when that inverse does not exist.
"""

from __future__ import annotations

import numpy as np
import torch


def minimum_norm_step(
    jac: torch.Tensor, values: torch.Tensor, level: torch.Tensor | float = 0.5
) -> torch.Tensor:
    """Per sample, the minimum-L2 ``r`` with ``jac @ r = level - values`` (least squares if inconsistent), float64.

    ``jac`` (N, C, D), ``values`` (N, C), ``level`` a scalar or (N, C). Solved through the C x C Gram matrix in
    float64, ``r = J^T (J J^T)^+ b``, which equals ``J^+ b``: a label without gradient drops out, dependent labels
    share the least-squares compromise.
    """
    j = jac.double()
    b = (torch.as_tensor(level, dtype=torch.float64, device=values.device) - values.double()).unsqueeze(-1)
    gram = j @ j.transpose(1, 2)
    coef = torch.linalg.pinv(gram, hermitian=True) @ b
    return (j.transpose(1, 2) @ coef).squeeze(-1)


def gram_inverse_step(
    jac: np.ndarray, values: np.ndarray, sign: np.ndarray, level: np.ndarray
) -> np.ndarray | None:
    """One sample's step with the study's arithmetic, or None where its Gram matrix is singular.

    ``jac`` (C, D) float32, ``values`` (C,) float32 sigmoid outputs, ``sign`` (C,) +-1 (target side), ``level`` (C,)
    the aim. The system is written as the study writes it, ``P^T r = q`` with ``P = -sign * J^T`` and
    ``q = sign * (values - level)`` (the same equations as ``J r = level - values``; the sign flips are exact), all
    float32; ``r = (P (P^T P)^{-1}) q``. Returns the (D,) step in float64 (the study accumulates in float64).
    """
    cols = jac.reshape(len(sign), -1).T * (-sign)  # (D, C), one column per label
    rhs = (sign * (values - level)).reshape(-1, 1)
    nonzero = np.any(
        cols.T @ cols != 0, axis=1
    )  # a label whose Gram row is all zero has no gradient: drop it
    cols, rhs = cols[:, nonzero], rhs[nonzero]
    try:
        inverse = np.linalg.inv(cols.T @ cols)
    except np.linalg.LinAlgError:  # exactly singular (e.g. two labels with the same gradient): no step
        return None
    return ((cols @ inverse) @ rhs).astype(np.float64).ravel()
