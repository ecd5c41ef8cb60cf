"""What is left to try on a CPU, per attack step (one forward + input-gradient pass of the fast mode's network copy):
bf16 autocast, oneDNN graph fusion (TorchScript), ``torch.compile`` with a warm cache, and the thread count.

Each variant is timed side by side in one process on the same batch, as the fastest of ``--repeats`` after warm-up
calls (the warm-up absorbs compilation, so ``torch.compile`` is measured warm), and compared to eager fp32. The
input gradient of each variant is compared with eager's (cosine similarity of the signs, what an L-inf step uses).

    .venv/bin/python benchmarks/cpu_options.py --models demo,resnet18 --batch 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from loop_models import demo_model, resnet  # noqa: E402

from mlattack.attacks.losses import summed_bce  # noqa: E402
from mlattack.evaluation.fast import fast_attack_copy  # noqa: E402


def step_fn(model: nn.Module, autocast: bool = False):
    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
        (grad,) = torch.autograd.grad(summed_bce(logits.float(), t).sum(), x)
        return grad

    return step


def interleaved(steps: dict, x, t, repeats: int, warmup: int) -> dict[str, tuple[float, torch.Tensor]]:
    """Fastest of ``repeats`` rounds per variant, each round timing every variant once: a load change from other
    jobs then hits all variants alike. ``steps`` values: ``(step, threads)``."""
    out = {}
    for label, (step, threads) in list(steps.items()):
        torch.set_num_threads(threads)
        try:
            for _ in range(max(warmup, 3)):  # TorchScript optimises (and may fail) after two profiled runs
                grad = step(x, t)
        except RuntimeError as e:  # e.g. TorchScript's fuser on a graph it cannot differentiate
            print(f"{label}: not applicable ({str(e).strip().splitlines()[0][:120]})")
            del steps[label]
            continue
        out[label] = (float("inf"), grad)
    for _ in range(repeats):
        for label, (step, threads) in steps.items():
            torch.set_num_threads(threads)
            start = time.perf_counter()
            step(x, t)
            out[label] = (min(out[label][0], time.perf_counter() - start), out[label][1])
    return out


def variants(model: nn.Module, x: torch.Tensor) -> dict:
    fast = fast_attack_copy(model)
    out = {"eager fp32 (fast copy)": step_fn(fast), "bf16 autocast": step_fn(fast, autocast=True)}
    try:
        torch.jit.enable_onednn_fusion(True)
        traced = torch.jit.trace(fast, x)  # not frozen: freezing drops what autograd needs
        out["oneDNN graph fusion (TorchScript)"] = step_fn(traced)
    except Exception as e:  # noqa: BLE001 - any tracing failure means "not applicable"
        print(f"oneDNN fusion: not applicable ({type(e).__name__}: {e})")
    out["torch.compile (warm)"] = step_fn(torch.compile(fast))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="demo,resnet18")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--demo_checkpoint", default=None)
    p.add_argument("--threads", type=int, default=1, help="threads of every variant but the thread-count row")
    args = p.parse_args()
    for name in args.models.split(","):
        if name == "demo":
            model, x, _ = demo_model(args.demo_checkpoint, args.batch, "cpu")
        else:
            model = resnet(int(name.removeprefix("resnet")), 20)
            x = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        x = x.contiguous(memory_format=torch.channels_last)
        t = torch.ones(len(x), 20)
        torch.set_num_threads(args.threads)
        print(f"\n## {name}, batch {len(x)}, {args.threads} thread(s)\n")
        print("| variant | ms per step | vs eager fp32 | sign agreement with eager |\n|---|---|---|---|")
        steps = {label: (step, args.threads) for label, step in variants(model, x).items()}
        other = 2 if args.threads == 1 else 1
        steps[f"eager fp32, {other} thread(s)"] = (step_fn(fast_attack_copy(model)), other)
        results = interleaved(steps, x, t, args.repeats, args.warmup)
        base, ref = results["eager fp32 (fast copy)"]
        for label, (secs, grad) in results.items():
            agree = float((grad.sign() == ref.sign()).float().mean())
            print(f"| {label} | {1e3 * secs:.1f} | {base / secs:.2f}x | {100 * agree:.2f} % |")
        torch.set_num_threads(args.threads)


if __name__ == "__main__":
    main()
