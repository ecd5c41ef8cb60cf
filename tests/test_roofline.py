"""benchmarks/roofline.py: the FLOP counts behind the arithmetic ceiling of loop_speed.py."""

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from roofline import ceiling, ceiling_table, step_flops  # noqa: E402


def test_step_flops_counts_the_weight_half_of_the_backward_only_when_asked():
    """A 3x3 convolution (3 -> 4 channels, 8x8, padding 1) then a linear head: forward 2·H·W·Cout·Cin·9 + 2·Cin·Cout
    FLOPs; the input gradient costs one more such convolution (and the head's), the weight gradient another."""
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(256, 5, bias=False)
    )
    conv, head = 2 * 8 * 8 * 4 * 3 * 9, 2 * 256 * 5
    x = torch.rand(2, 3, 8, 8)
    assert step_flops(net, x, weight_grads=False) == 2 * (2 * conv + 2 * head)
    assert step_flops(net, x, weight_grads=True) == 2 * (3 * conv + 3 * head)
    assert all(p.requires_grad for p in net.parameters()) and all(p.grad is None for p in net.parameters())


def test_ceiling_is_the_baseline_time_over_the_work_at_peak():
    assert ceiling(10.0, 2e9, peak=1.0) == pytest.approx(5.0)
    work = [{"name": "BIM", "secs": {"advertorch": 6.0, "strict": 4.0, "fast": 2.0}, "steps": dict.fromkeys(
        ("advertorch", "strict", "fast"), 10)}]  # fmt: skip
    table = ceiling_table(work, n=2, flops={"advertorch": 3e9, "ours": 2e9}, peak=40.0, device="CPU")
    # fast: 2 samples x 10 steps x 2 GFLOP = 40 GFLOP in 2 s (20 GFLOP/s); at 40 GFLOP/s it takes 1 s: 6x
    assert "| BIM | 10 | 10 | 20 | 3.00x | 6.00x |" in table
    assert "| all | 10 | 10 | 20 | 3.00x | 6.00x |" in table
