"""The network fast mode attacks: the model itself, or a copy with BatchNorm folded, channels_last, compiled.

An attack only ever runs the network frozen and in eval mode, where a BatchNorm is a fixed per-channel affine map:
folding it into the preceding convolution's weights removes one memory-bound pass forward and one backward per
layer, and channels_last lets oneDNN/cuDNN pick their faster NHWC kernels (on the demo model 1.12x and 1.36x per
step on one CPU thread). Both change the logits only by float rounding (1e-7 relative on the demo model), but an
L∞ step takes the gradient's sign, and over 30 steps a rounding-level change can move a sample onto another path:
on the demo model 3-4 of 32 samples that ran their whole budget ended a label lower than in paper mode, and as many
higher. So fast mode attacks the network itself by default ("exact": the same arithmetic as paper mode, so a
sample's path differs only where early stop ends it) and the copy only when asked ("folded", "compiled"). Either
way the evaluation loop judges every adversarial image with the original network, so a recorded success is
always a success of the model under attack.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Conv -> BatchNorm pairs folded into one convolution (``torch.fx`` pattern fusion) on an eval-mode copy.

    Networks that ``torch.fx`` cannot trace (data-dependent control flow) are returned unchanged, as a copy.
    """
    from torch.fx.experimental.optimization import fuse

    net = copy.deepcopy(net).eval()
    try:
        return fuse(net, inplace=True)
    except Exception as e:  # noqa: BLE001 - tracing failures come in many types; folding is only an optimisation
        log.info(
            "fast mode: %s is not traceable by torch.fx (%s); BatchNorm left unfolded", type(net).__name__, e
        )
        return net


def attack_network(net: nn.Module, kind: str) -> nn.Module:
    """What fast mode attacks (``kind``: see :data:`mlattack.evaluation.settings.FastNetwork`)."""
    if kind == "exact":
        return net  # the attack loop runs it frozen and in eval mode, as in paper mode
    if kind not in ("folded", "compiled"):
        raise ValueError(f"fast network must be exact, folded or compiled, got {kind!r}")
    return fast_attack_copy(net, compile=kind == "compiled")


def uses_channels_last(kind: str) -> bool:
    """Whether inputs to :func:`attack_network`'s result should be channels_last (the copy's layout)."""
    return kind != "exact"


def fast_attack_copy(
    net: nn.Module, channels_last: bool = True, fold_bn: bool = True, compile: bool = False
) -> nn.Module:
    """A frozen, eval-mode copy of ``net`` to run attacks on (``net`` itself is not touched)."""
    fast = fold_batchnorm(net) if fold_bn else copy.deepcopy(net).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    if compile:
        fast = torch.compile(fast, dynamic=True)  # early stop shrinks the batch: one graph for all sizes
    return fast
