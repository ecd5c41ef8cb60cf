"""Checks shared by the continuous schedulers' tests: rank slicing keeps every sample's result, the batch stays
full while samples queue, and channels_last inputs reach the network as channels_last."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mlattack.attacks.base import AttackResult
from mlattack.evaluation.batches import group_share

#: (world size, group size, slots per rank): shares that split, merge and reorder the one-process batches
LAYOUTS = ((2, 2, 2), (3, 1, 4), (2, 4, 3))


def assert_rank_slicing_keeps_results(
    run: Callable[[torch.Tensor, torch.Tensor, Sequence[int], int], AttackResult],
    images: torch.Tensor,
    target: torch.Tensor,
    keys: Sequence[int],
    whole: AttackResult,
) -> None:
    """``run(images, target, keys, slots)`` on each rank's share of whole groups (as ``RankSlice`` hands them out)
    gives each sample the image and step count it got in one process (``whole``)."""
    n = len(images)
    for world, group, slots in LAYOUTS:
        adv, iterations = torch.empty_like(images), torch.empty(n, dtype=torch.long)
        for rank in range(world):
            share = group_share(n, group, rank, world)
            res = run(images[share], target[share], [keys[p] for p in share], slots)
            adv[share], iterations[share] = res.adv, res.iterations
        torch.testing.assert_close(adv, whole.adv, atol=1e-6, rtol=0)
        assert torch.equal(iterations, whole.iterations)


def forward_layouts(model: nn.Module, call: Callable[[], Any]) -> tuple[Any, list[bool]]:
    """``call()``'s result and, per forward pass of ``model`` during it, whether its input was channels_last
    (fast mode's folded copy runs NHWC: a scheduler's refills and drops must not turn its batch back to NCHW)."""
    nhwc: list[bool] = []
    handle = model.register_forward_hook(
        lambda m, inp, out: nhwc.append(inp[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        return call(), nhwc
    finally:
        handle.remove()


def assert_full_until_drain(sizes: list[int], slots: int) -> None:
    """Forward batch sizes of a scheduler run: every pass runs all ``slots`` while samples wait in the queue; only
    the tail drains, never growing again."""
    assert sizes[:slots] == [slots] * slots and max(sizes) == slots
    tail = sizes[next(i for i, s in enumerate(sizes) if s < slots) :]
    assert tail == sorted(tail, reverse=True)
