"""The "fast" mode's copy of the attacked network: BatchNorm folded into its convolution, channels_last, compiled.

An attack only ever runs the network frozen and in eval mode, where a BatchNorm is a fixed per-channel affine map:
folding it into the preceding convolution's weights removes one memory-bound pass forward and one backward per
layer, and channels_last lets oneDNN/cuDNN pick their faster NHWC kernels. Both change results only by float
rounding (1e-7 relative on the demo model); the evaluation loop still judges every adversarial image with the
original network, so a recorded success is always a success of the model under attack.
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
