"""End-to-end attack loop: the real AdverTorch 0.2.3 as the study called it vs mlattack's strict and fast loops.

Loops, timed side by side in one process on the same model, samples and attack (FGSM, BIM, PGD, MI-FGSM with the
study's eps; ``--nb_iter`` steps of ``--eps_iter``):

- **advertorch**: ``advertorch.attacks.{GradientSignAttack, LinfBasicIterativeAttack, PGDAttack,
  MomentumIterativeAttack}(targeted=True)`` on the model with sigmoid outputs and the study's clamped BCE summed over
  the batch; the weights keep ``requires_grad=True`` (the study never froze them, so every backward also fills
  parameter gradients); batches of ``--batch``; every step for every sample. Imported through
  ``tests/attacks/advertorch_compat.py`` (the import shim for torch 2.x).
- **strict**: mlattack's attacks as paper mode runs them (no early stop, input gradients only). Each sample must show
  the same labels as with AdverTorch (the same global seed per batch gives PGD the same start).
- **fast**: ``mlattack attack --mode fast`` (``--fast_network exact``): early stop and the continuous scheduler
  (:mod:`mlattack.evaluation.chunks`: ``--batch`` samples in flight, a chunk of 8 batches queued, per-sample random
  starts) on the network itself. It must never show fewer labels per sample than strict (PGD: than strict from
  the same per-sample starts, run untimed, since AdverTorch's and strict's starts come from the global RNG).
- **fast-folded**: ``--fast_network folded``: the same on the BatchNorm-folded channels_last copy (faster steps;
  rounding may move a sample that runs its whole budget a label either way: the "lower / higher" column).
- **fast-batched** (``--loops``): fast without continuous batching (a batch shrinks as its samples stop), to show
  what the scheduler adds. **strict-bf16** / **fast-bf16** (on the folded copy) with ``--autocast bf16``;
  **fast-compiled** with ``--compile [mode]`` (``torch.compile`` of the folded copy; ``reduce-overhead`` = CUDA
  graphs).
- After the table, the arithmetic ceiling (``roofline.py``): GFLOP/s each loop reached and the speed-up fast would
  have at the machine's attainable peak.

Memory: the peak above the loop's start (``loop_models.PeakMemory``: CPU RSS high-water, CUDA allocated).

    .venv/bin/python benchmarks/loop_speed.py --models demo --demo_checkpoint demo.pt --samples 32 --batch 8
    .venv/bin/python benchmarks/loop_speed.py --models resnet18 --samples 8 --batch 4 --nb_iter 10 --eps_iter 0.01
    .venv/bin/python benchmarks/loop_speed.py --device cuda --models resnet101 --samples 64 --batch 32 --autocast bf16
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

from loop_models import (  # noqa: E402
    PeakMemory,
    Probabilities,
    advertorch_attack,
    demo_model,
    random_samples,
    resnet,
)
from roofline import ceiling_table, math_mode, peak_gflops, step_flops  # noqa: E402

from mlattack.attacks import BIM, FGSM, MIFGSM, PGD  # noqa: E402
from mlattack.attacks.continuous import run_continuous  # noqa: E402
from mlattack.attacks.losses import labels_shown  # noqa: E402
from mlattack.evaluation.chunks import attack_chunk, loader_batch  # noqa: E402
from mlattack.evaluation.fast import fast_attack_copy  # noqa: E402
from mlattack.scenarios import scenario_success, scenario_thresholds  # noqa: E402

ATTACKS = ("FGSM", "BIM", "PGD", "MIFGSM")
PAPER_EPS = {"FGSM": 0.3, "BIM": 0.1, "PGD": 0.3, "MIFGSM": 0.3}  # docs/PROTOCOL.md
LOOPS = ("advertorch", "strict", "fast", "fast-folded", "fast-batched")
#: loops that run the folded channels_last copy
NHWC = ("fast-folded", "fast-bf16", "fast-compiled")
OURS = {"FGSM": FGSM, "BIM": BIM, "PGD": PGD, "MIFGSM": MIFGSM}


def our_attack(name: str, nb_iter: int, eps_iter: float, early_stop: bool, autocast: str | None):
    kw = {"eps": PAPER_EPS[name], "early_stop": early_stop, "autocast": autocast}
    return OURS[name](**kw) if name == "FGSM" else OURS[name](nb_iter=nb_iter, eps_iter=eps_iter, **kw)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_loop(kind: str, name: str, model: nn.Module, net: nn.Module, args):
    """``(x, target, seed) -> adversarial images`` for one loop and attack; ``net``: the network it attacks."""
    b = args.batch
    if kind == "advertorch":
        study = Probabilities(model).eval()
        for p in study.parameters():
            p.requires_grad_(True)  # as the study ran it: weight gradients computed and accumulated
        adversary = advertorch_attack(name, study, PAPER_EPS[name], args.nb_iter, args.eps_iter)

        def run(x, t, seed):
            out = []
            for i in range(0, len(x), b):
                torch.manual_seed(seed + i)
                out.append(adversary.perturb(x[i : i + b], t[i : i + b]).detach())
            return torch.cat(out)

        return run
    autocast = "bf16" if kind.endswith("bf16") else None
    attack = our_attack(name, args.nb_iter, args.eps_iter, not kind.startswith("strict"), autocast)
    if kind.startswith("strict"):

        def run(x, t, seed):
            out = []
            for i in range(0, len(x), b):
                torch.manual_seed(seed + i)
                out.append(attack.run(net, x[i : i + b], t[i : i + b], diagnostics=False).adv)
            return torch.cat(out)

        return run
    continuous = kind != "fast-batched"  # fast-batched: the same chunks, attacked batch by batch

    def run(x, t, seed):
        x = x.contiguous(memory_format=torch.channels_last) if kind in NHWC else x
        chunk, out = loader_batch(b, fast=True), []
        steps = []
        for i in range(0, len(x), chunk):
            pos = list(range(i, min(i + chunk, len(x))))
            res, _ = attack_chunk(name, attack, net, x[pos], t[pos], pos, seed, b, continuous)
            out.append(res.adv)
            steps.append(res.iterations.float())
        run.steps = float(torch.cat(steps).mean())  # gradient steps per sample: how often early stop fired
        return torch.cat(out)

    return run


def strict_from_fast_starts(name: str, model: nn.Module, x, target, seed: int, args) -> torch.Tensor | None:
    """Labels shown after strict with the fast loop's per-sample random starts (untimed; None without a random
    start): the per-sample yardstick for fast, whose starts differ from AdverTorch's global-RNG ones."""
    attack = our_attack(name, args.nb_iter, args.eps_iter, False, None)
    if attack.iterative_plan(model).start is None:
        return None
    res = run_continuous(attack, model, x, target, list(range(len(x))), seed, args.batch, diagnostics=False)
    with torch.no_grad():
        return torch.cat([labels_shown(model(a)).cpu() for a in res.adv.split(args.batch)])


def success_row(shown: torch.Tensor, y: torch.Tensor) -> list[float]:
    thresholds = scenario_thresholds(float(y.sum(1).float().mean()), y.shape[1])
    return (100 * scenario_success(shown, thresholds).float().mean(0)).tolist()


def bench_model(label: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> dict:
    folded = fast_attack_copy(model)
    models = {"fast-folded": folded, "strict-bf16": folded, "fast-bf16": folded}
    if args.compile:  # "reduce-overhead" = CUDA graphs: one graph per batch size, so shapes stay static
        mode = None if args.compile == "default" else args.compile
        models["fast-compiled"] = torch.compile(folded, mode=mode, dynamic=args.compile != "reduce-overhead")
    loops = list(args.loops) + ([f"{k}-bf16" for k in ("strict", "fast")] if args.autocast else [])
    loops += ["fast-compiled"] if args.compile else []
    checked = [k for k in ("fast", "fast-folded", "fast-compiled") if k in loops]  # fp32 fast loops
    target = torch.ones(len(x), y.shape[1], device=x.device)
    print(
        f"\n## {label}: {len(x)} samples, batch {args.batch}, {args.nb_iter} steps of {args.eps_iter}, "
        f"avgLabels {float(y.sum(1).mean()):.2f}, C = {y.shape[1]}, {device_name(args.device)}\n"
    )
    fast_like = [k for k in loops if k.startswith("fast")]
    head = (
        "| attack | "
        + " | ".join(f"{m} s" for m in loops)
        + " | "
        + " | ".join(f"{m} speed-up" for m in ["strict", *fast_like])
    )
    head += " | " + " | ".join(f"{m} MiB" for m in loops) + " | fast steps/sample | strict = advertorch | "
    head += " | ".join(f"{k} vs strict: lower / higher" for k in checked) + " |"
    print(head + "\n" + "|---" * (head.count("|") - 1) + "|")
    tables = {m: {} for m in loops}
    total = dict.fromkeys(loops, 0.0)
    work = []  # per attack: its name, seconds per loop, and gradient steps per sample per loop
    for name in args.attacks:
        mem, shown, steps = {}, {}, args.nb_iter if name != "FGSM" else 1
        runs = {kind: make_loop(kind, name, model, models.get(kind, model), args) for kind in loops}
        if args.warmup:
            for run in runs.values():
                run(x[: args.batch], target[: args.batch], 0)
        secs = dict.fromkeys(loops, float("inf"))
        # rounds over all loops, fastest per loop: a burst of load from other jobs hits one round of each loop
        for _ in range(args.repeats):
            for kind, run in runs.items():
                sync(args.device)
                with PeakMemory(args.device) as peak:
                    start = time.perf_counter()
                    adv = run(x, target, 123)
                    sync(args.device)
                    secs[kind] = min(secs[kind], time.perf_counter() - start)
                mem[kind] = peak.mib
                with torch.no_grad():
                    shown[kind] = torch.cat(
                        [labels_shown(model(a.float())).cpu() for a in adv.split(args.batch)]
                    )
        for kind in loops:
            tables[kind][name] = success_row(shown[kind], y)
            total[kind] += secs[kind]
        fast_steps = {k: getattr(runs[k], "steps", steps) for k in loops}
        work.append(
            {"name": name, "secs": secs, "steps": {**fast_steps, "advertorch": steps, "strict": steps}}
        )
        same = int((shown["strict"] == shown["advertorch"]).sum())
        paired = strict_from_fast_starts(name, model, x, target, 123, args)
        base = shown["strict"] if paired is None else paired
        moved = [f"{int((shown[k] < base).sum())} / {int((shown[k] > base).sum())}" for k in checked]
        print(
            f"| {name} | " + " | ".join(f"{secs[m]:.2f}" for m in loops) + " | "
            + " | ".join(f"{secs['advertorch'] / secs[m]:.2f}x" for m in ["strict", *fast_like]) + " | "
            + " | ".join(f"{mem[m]:.1f}" for m in loops)
            + f" | {fast_steps['fast']:.1f} | {'yes' if same == len(x) else 'NO'} ({same}/{len(x)}) | "
            + " | ".join(moved) + " |"
        )  # fmt: skip
    print(
        "| all | " + " | ".join(f"{total[m]:.2f}" for m in loops) + " | "
        + " | ".join(f"{total['advertorch'] / total[m]:.2f}x" for m in ["strict", *fast_like]) + " |"
    )  # fmt: skip
    print(f"\nmemory: {PeakMemory(args.device).kind}")
    b = x[: args.batch]
    flops = {
        "advertorch": step_flops(Probabilities(model), b, weight_grads=True) / len(b),
        "ours": step_flops(model, b, weight_grads=False) / len(b),
    }
    mode = math_mode(args.device)
    print(ceiling_table(work, len(x), flops, peak_gflops(args.device), f"{device_name(args.device)}, {mode}"))
    if args.autocast:  # the bf16 loops' ceiling is bf16's peak
        print(
            f"bf16 attainable peak (bf16-mixed loops): {peak_gflops(args.device, torch.bfloat16):.0f} GFLOP/s"
        )
    for kind in loops:
        print(f"\nSuccess rate (%), {kind}:\n\n| attack | " + " | ".join(f"n={k}" for k in range(8)) + " |")
        print("|---" * 9 + "|")
        for name, row in tables[kind].items():
            print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    if args.autocast:
        diff = max(
            abs(a - b)
            for n in args.attacks
            for a, b in zip(tables["strict-bf16"][n], tables["strict"][n], strict=True)
        )
        print(
            f"\nbf16 vs fp32 (strict): largest success difference over n = 0..7: {diff:.1f} points; "
            f"speed {total['strict'] / total['strict-bf16']:.2f}x (fast: {total['fast'] / total['fast-bf16']:.2f}x)"
        )
    return {"total": total, "tables": tables}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({torch.get_num_threads()} threads)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="demo", help="comma list of demo, resnet18, resnet101")
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument("--loops", default=",".join(LOOPS), help="advertorch and strict and fast are always run")
    p.add_argument(
        "--samples", type=int, default=32, help="samples per model (demo: correctly predicted ones)"
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--nb_iter", type=int, default=30)
    p.add_argument("--eps_iter", type=float, default=0.001)
    p.add_argument("--num_classes", type=int, default=20)
    p.add_argument("--image_size", type=int, default=None, help="ResNet input size (default 224 / 448)")
    p.add_argument(
        "--demo_checkpoint", default=None, help="models:/ URI or .pt state dict (trained and saved if absent)"
    )
    p.add_argument("--demo_epochs", type=int, default=6, help="when the demo model is trained here")
    p.add_argument("--demo_train", type=int, default=2000, help="training images, when trained here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--autocast", choices=["bf16"], default=None, help="add strict-bf16 and fast-bf16 loops")
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        help="torch.compile the fast loops' model; a mode may follow (reduce-overhead: CUDA graphs)",
    )
    p.add_argument("--warmup", action="store_true", help="one untimed batch per loop first")
    p.add_argument(
        "--repeats", type=int, default=1, help="rounds over the loops; each loop's fastest is kept"
    )
    args = p.parse_args()
    args.attacks = [a.strip().upper() for a in args.attacks.split(",") if a.strip()]
    args.loops = list(dict.fromkeys(["advertorch", "strict", "fast", *args.loops.split(",")]))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    sizes = {"resnet18": (18, 224), "resnet101": (101, 448)}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name in sizes:
            depth, size = sizes[name]
            size = args.image_size or size
            model = resnet(depth, args.num_classes).to(args.device)
            x, y = random_samples(model, args.samples, size, args.device)
            bench_model(f"ResNet-{depth} {size}² (random init)", model, x, y, args)
        elif name == "demo":
            model, x, y = demo_model(
                args.demo_checkpoint, args.samples, args.device, args.demo_epochs, args.demo_train
            )
            bench_model("demo ML-GCN (tiny trunk) 64²", model, x, y, args)
        else:
            raise SystemExit(f"--models: unknown model {name!r}")


if __name__ == "__main__":
    main()
