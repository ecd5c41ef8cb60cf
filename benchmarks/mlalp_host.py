"""MLA-LP's host share on a CPU that mimics a GPU's balance: a cheap network at 448² (so the floor is small while
D = 3·448² = 602k, as for ResNet-101 at 448²), C = 20 labels.

Prints, per sample-iteration (only iterations that ran an LP step count), the whole attack, the per-label Jacobian
and the LP solver, each against the floor (one forward plus input-gradient pass per sample, same model and batch,
same process). Target on CPU (issue 25): the whole attack ≤ 50× the floor.

    .venv/bin/python benchmarks/mlalp_host.py                  # batch 8, 3 iterations
    .venv/bin/python benchmarks/mlalp_host.py --batch 32 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch
from torch import nn

from mlattack import attacks
from mlattack.attacks import highs_lp, linf_lp
from mlattack.attacks import mlalp as mlalp_module

SIZE = 448


def cheap_net(labels: int) -> nn.Module:
    """Two strided convolutions with smooth activations: every input gradient is non-zero and the network is
    far from linear, so the LP has real work; its forward+backward at 448² costs a few ms per sample on CPU."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 8, stride=8),
        nn.Tanh(),
        nn.Conv2d(8, 16, 4, stride=4),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(256, labels),
    ).eval()


def floor_time(model: nn.Module, x: torch.Tensor, target: torch.Tensor, repeats: int) -> float:
    def once() -> None:
        xi = x.detach().requires_grad_(True)
        loss = attacks.base.summed_bce(model(xi), target).sum()
        torch.autograd.grad(loss, xi)

    once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / len(x)


class Timed:
    """Wraps a module's function (or a class's method) and adds up its wall time (the LP solver, the Jacobian)."""

    def __init__(self, module, name: str) -> None:
        self.module, self.name, self.total = module, name, 0.0
        self.inner = getattr(module, name)

    def __enter__(self) -> Timed:
        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try:
                return self.inner(*a, **k)
            finally:
                self.total += time.perf_counter() - t0

        setattr(self.module, self.name, wrapped)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.module, self.name, self.inner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--labels", type=int, default=20)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--variant", default="reference", choices=("reference", "corrected"))
    ap.add_argument("--profile", action="store_true", help="print the 15 largest cumulative entries")
    args = ap.parse_args()

    model = cheap_net(args.labels)
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, SIZE, SIZE, generator=g)
    target = torch.ones(args.batch, args.labels)  # show every label: the study's target
    floor = floor_time(model, x, target, 5)
    attack = attacks.MLALP(max_iter=args.iters, variant=args.variant, early_stop=False)
    # untimed warm-up: the first Jacobian of a process imports sympy through torch.fx (0.3-0.4 s, once)
    attacks.MLALP(max_iter=1, variant=args.variant, early_stop=False).run(
        model, x[:1], target[:1], diagnostics=False
    )
    prof = cProfile.Profile() if args.profile else None
    with (
        Timed(mlalp_module, "solve_linf_lp_batch") as lp,
        Timed(mlalp_module, "label_jacobian") as jac,
        Timed(highs_lp.ReducedLP, "solve") as highs,
        Timed(linf_lp, "dual_start") as est,
    ):
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        res = attack.run(model, x, target, diagnostics=False)
        if prof:
            prof.disable()
        total = time.perf_counter() - t0
    steps = int(res.iterations.sum())
    print(
        f"cheap CNN @ {SIZE}², D = {3 * SIZE * SIZE}, C = {args.labels}, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, variant {args.variant}: floor {1e3 * floor:.1f} ms/sample"
    )
    if steps == 0:
        print("no sample took an LP step: nothing to divide by (not a measurement)")
        return
    print(f"sample-iterations that ran: {steps} ({steps / args.batch:.1f}/sample, {args.iters} at most)")
    parts = [("MLA-LP total", total), ("  Jacobian", jac.total), ("  LP solver", lp.total)]
    # both within the LP solver; HiGHS counts the dual start's subsample LP too
    parts += [("    dual start", est.total), ("    HiGHS", highs.total)]
    for name, t in parts:
        per = t / steps
        print(f"{name:<14} {1e3 * per:9.1f} ms/sample-iter  {per / floor:8.1f}× floor")
    flag = "ok" if total / steps / floor <= 50 else "SLOW"
    print(f"target: total ≤ 50× floor: {flag}")
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
