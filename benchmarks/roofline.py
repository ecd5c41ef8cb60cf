"""How far an attack loop is from the machine's arithmetic ceiling: FLOPs per step and the attainable peak.

A loop cannot run faster than its floating-point work divided by the fastest rate the hardware reaches on this
kind of work. ``loop_speed.py`` uses this to tell "the loop wastes time" from "the loop does all it can":

- :func:`step_flops` counts the FLOPs of one attack step with :class:`torch.utils.flop_counter.FlopCounterMode`
  (matmuls and convolutions; element-wise work is left out, so it is a lower bound on the work). AdverTorch's step
  computes the weights' gradients too (``loss.backward()`` with ``requires_grad`` weights); mlattack's computes the
  input gradient only (frozen weights, the backward asked for the input alone), and the convolution backward then
  skips the weight half.
- :func:`peak_gflops` times the fastest of a large matmul and a channels_last convolution in the loops' math mode
  (:func:`math_mode`: fp32 on a CPU, TF32 on CUDA, where cuDNN runs fp32 convolutions in TF32 by default; bf16 under
  bf16 autocast) on this device and thread count: the attainable rate (not a datasheet number).
- :func:`ceiling` turns both into the speed-up a loop doing ``flops`` would have at that peak: an upper bound,
  since no real network runs every layer at the peak rate.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def step_flops(model: nn.Module, x: torch.Tensor, weight_grads: bool) -> float:
    """FLOPs of one forward + backward pass of ``model`` on ``x`` (the BCE towards all labels as loss).

    ``weight_grads``: as AdverTorch runs it (weights require grad, ``backward`` fills their gradients) or as
    mlattack does (only the input's gradient). The model's ``requires_grad`` flags are restored."""
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(weight_grads)
        x = x.detach().clone().requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            logits = model(x)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            # backward(inputs=[x]) prunes the graph as ``torch.autograd.grad(loss, x)`` does (the counter's
            # module hooks do not run under autograd.grad)
            loss.backward(inputs=None if weight_grads else [x])
        return float(counter.get_total_flops())
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
            p.grad = None


def _best_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up: kernel selection, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def math_mode(device: str, dtype: torch.dtype = torch.float32) -> str:
    """The arithmetic the loops' convolutions run in: on CUDA an fp32 network's convolutions use TF32 (cuDNN's
    default, ``torch.backends.cudnn.allow_tf32``), so its peak is TF32's; autocast's dtype where it is on."""
    if dtype != torch.float32:
        return str(dtype).removeprefix("torch.")
    return "tf32" if device.startswith("cuda") and torch.backends.cudnn.allow_tf32 else "fp32"


@torch.no_grad()
def peak_gflops(device: str, dtype: torch.dtype = torch.float32) -> float:
    """The attainable GFLOP/s here in :func:`math_mode`: the faster of a square matmul and a 3x3 channels_last
    convolution (a typical attacked trunk layer), both sized to fill the device (2048² and 64 -> 128 channels at
    32², batch 16 on a CPU; 8192² and 256 -> 256 channels at 56², batch 64 on CUDA). In TF32 mode the matmul runs
    in TF32 as the convolutions do; the backend flag is restored."""
    cuda = device.startswith("cuda")
    n, (b, c_in, c_out, hw) = (8192, (64, 256, 256, 56)) if cuda else (2048, (16, 64, 128, 32))
    a, w = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    flag = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = math_mode(device, dtype) == "tf32"
    try:
        mm = 2 * n**3 / _best_seconds(lambda: a @ w)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = flag
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False).to(device=device, dtype=dtype)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(b, c_in, hw, hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    conv_flops = 2 * b * hw * hw * c_out * c_in * 9 / _best_seconds(lambda: conv(x))
    return max(mm, conv_flops) / 1e9


def ceiling(seconds_baseline: float, flops: float, peak: float) -> float:
    """The speed-up over a loop that took ``seconds_baseline`` of a loop doing ``flops`` at ``peak`` GFLOP/s."""
    return seconds_baseline / (flops / (peak * 1e9))


def ceiling_table(work: list[dict], n: int, flops: dict[str, float], peak: float, device: str) -> str:
    """Markdown: the GFLOP/s each loop of ``loop_speed.py`` reached and each fast loop's ceiling over AdverTorch.

    ``work``: per attack, ``secs`` and ``steps`` (gradient steps per sample) by loop; ``flops``: per sample-step,
    "advertorch" (with weight gradients) and "ours" (input gradient only: strict and every fast loop)."""
    loops = [k for k in work[0]["secs"] if not k.endswith(("bf16", "batched"))]  # fp32, one per network
    fast = [k for k in loops if k.startswith("fast")]
    per_step = {k: flops["advertorch" if k == "advertorch" else "ours"] for k in loops}
    lines = [
        f"\nArithmetic ceiling: {flops['advertorch'] / 1e9:.3f} GFLOP per sample-step with weight gradients "
        f"(advertorch), {flops['ours'] / 1e9:.3f} with the input gradient only (strict, fast); attainable peak "
        f"{peak:.0f} GFLOP/s (matmul / channels_last conv in {device}). A fast loop's ceiling is AdverTorch's "
        "time over its FLOPs at that peak: what no scheduling or kernel choice can pass without less arithmetic.\n",
        "| attack | " + " | ".join(f"{k} GFLOP/s" for k in loops) + " | " + " | ".join(
            f"{k} speed-up | {k} ceiling" for k in fast) + " |",
    ]  # fmt: skip
    lines.append("|---" * (lines[-1].count("|") - 1) + "|")
    rows = [*work, {"name": "all", "secs": {}, "steps": {}}]
    for w in rows:
        secs = w["secs"] or {k: sum(v["secs"][k] for v in work) for k in loops}
        work_done = {
            k: sum(n * v["steps"][k] * per_step[k] for v in (work if w is rows[-1] else [w])) for k in loops
        }
        rates = [f"{work_done[k] / secs[k] / 1e9:.0f}" for k in loops]
        cells = [
            f"{secs['advertorch'] / secs[k]:.2f}x | {ceiling(secs['advertorch'], work_done[k], peak):.2f}x"
            for k in fast
        ]
        lines.append(f"| {w['name']} | " + " | ".join(rates) + " | " + " | ".join(cells) + " |")
    return "\n".join(lines)
