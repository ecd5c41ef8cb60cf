"""The real AdverTorch 0.2.3 (the version the study ran), importable on torch 2.x, as the gradient attacks' oracle.

advertorch 0.2.3 imports ``zero_gradients`` from ``torch.autograd.gradcheck`` when its package loads (only its
FAB attack uses it, and no test here runs FAB); torch has since removed that helper, so the import fails on torch 2.x.
This module puts a small stand-in there first and then imports the package, so the parity tests run against
AdverTorch itself rather than a copy of its code. It is a dev dependency (``pip install -e '.[dev]'``).

    from tests.attacks.advertorch_compat import attacks, utils
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import torch

# the module itself: ``torch.autograd.gradcheck`` as an attribute is the function of that name
_gradcheck = importlib.import_module("torch.autograd.gradcheck")


def zero_grad_of(x: torch.Tensor | Iterable) -> None:
    """Zero ``.grad`` in place for a tensor, or for every tensor in a (nested) iterable of them.

    Behaves like the helper torch removed: a tensor without a gradient is left alone, and the gradient is
    detached from any graph before being zeroed.
    """
    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
        return
    for item in x:
        zero_grad_of(item)


if not hasattr(_gradcheck, "zero_gradients"):
    _gradcheck.zero_gradients = zero_grad_of

try:
    import advertorch
    from advertorch import attacks, utils
except ModuleNotFoundError as err:  # a clear message instead of a bare ModuleNotFoundError deep in a test
    if err.name != "advertorch":
        raise
    raise ImportError(
        "the gradient-attack parity tests need advertorch==0.2.3: pip install -e '.[dev]'"
    ) from err

if advertorch.__version__ != "0.2.3":
    raise ImportError(
        f"the parity tests pin advertorch 0.2.3 (the study's version); found {advertorch.__version__}"
    )

__all__ = ["attacks", "utils", "zero_grad_of"]
