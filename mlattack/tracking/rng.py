"""The random number generators' states as plain tensors and numbers, so they travel in a checkpoint that is read
with ``weights_only=True``: a fit resumed from it draws the same data order and dropout masks as one that never
stopped (Lightning restores model, optimiser and loops, not the global generators)."""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_states() -> dict:
    """Python's, NumPy's, torch's (and CUDA's, when in use) global generator states."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "python": [version, list(internal), gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` captured (parts that are missing are left alone)."""
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "numpy" in states:
        n = states["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["name"], keys, int(n["pos"]), int(n["has_gauss"]), float(n["cached"])))
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
