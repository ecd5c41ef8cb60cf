"""Attack cost per sample-iteration, as a ratio to the floor: one forward plus input-gradient pass of the same model
and batch with frozen weights, measured in the same process (median of repeats, after a warm-up).

Targets (issues 5, 16): ratio <= 1.10 for FGSM, FGM, BIM, PGD, MI-FGSM, SLIDE, ML-CW and ML-APGD (its time also holds
one forward-only pass at the last iterate, so a small --iters weighs that more); ML-DP and MLA-LP per iteration
<= (C + 2) x the floor, C = number of labels. Weights are random (nothing is downloaded); a linear head gives C logits.

Models: torchvision ResNet-18 (224^2) and ResNet-101 (448^2), and the attention victims of issue 17 at 224^2:
Query2Label on a ResNet-18 trunk (width 512, 1 encoder + 2 decoder layers, 7 x 7 tokens), timm's ViT-Ti/16
(196 tokens) and ML-LIW on the EfficientNet-Lite0 trunk (random weights here too).

A random network's logits are often so large that every sigmoid saturates: ML-DP's and MLA-LP's Jacobians are then
zero and every sample stops before its first iteration. So each model's logits are standardised on the benchmark
batch (per label, mean 0 and standard deviation 1: a fitted affine head, one element-wise op), which leaves about half
the labels shown and the all-ones target reachable. Per sample-iteration times divide by the iterations that ran; a
row whose samples took none prints "did not iterate" instead of a number.

    python benchmarks/attack_speed.py --quick                 # ResNet-18 at 224^2, few iterations (CPU: minutes)
    python benchmarks/attack_speed.py --quick --models query2label vit_ti16 mlliw_effnet   # the attention victims
    python benchmarks/attack_speed.py --device cuda           # every model
    python benchmarks/attack_speed.py --models resnet18 --attacks MLCW MLDP --iters 5 --batch 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn

import mlattack.attacks as attacks

SIZES = {"resnet18": 224, "resnet101": 448, "query2label": 224, "vit_ti16": 224, "mlliw_effnet": 224}
ORDER = ["FGSM", "FGM", "BIM", "PGD", "MIFGSM", "SLIDE", "MLCW", "MLDP", "MLALP", "APGD", "LabelGraphPGD"]
PER_LABEL = {"MLDP", "MLALP"}  # target (C + 2) x floor; the others 1.10 x floor


def build_model(name: str, num_labels: int, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    if name == "query2label":
        from mlattack.models.query2label import Query2Label

        net = Query2Label(
            num_labels, backbone="resnet18", backbone_weights="random", hidden_dim=512, ff_dim=2048
        )
    elif name == "vit_ti16":
        from mlattack.models.vit import ViT

        net = ViT(num_labels, arch="vit_tiny_patch16_224", image_size=SIZES[name])
    elif name == "mlliw_effnet":
        from mlattack.models.mlliw import MLLIW

        net = MLLIW(num_labels, backbone="efficientnet_lite0", backbone_weights="random")
    else:
        net = getattr(torchvision.models, name)(weights=None)
        net.fc = nn.Linear(net.fc.in_features, num_labels)
    return net.to(device).eval()


class Standardised(nn.Module):
    """``(net(x) - mean) / std`` with per-label constants fitted on one batch: unsaturated sigmoids."""

    def __init__(self, net: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        with torch.no_grad():
            z = net(x).float()
        self.register_buffer("mean", z.mean(0))
        self.register_buffer("std", z.std(0).clamp_min(1e-6) if len(z) > 1 else z.abs().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) - self.mean) / self.std


def make_attack(name: str, iters: int, labels: int = 20) -> attacks.Attack:
    cls = getattr(attacks, name)
    if name in {"FGSM", "FGM"}:
        return cls()
    if name == "MLCW":  # no abort and one search step: every sample takes exactly `iters` Adam steps
        return cls(max_iter=iters, binary_search_steps=1, abort_early=False)
    if name in {"MLDP", "MLALP"}:
        return cls(max_iter=iters, early_stop=False)
    if name == "LabelGraphPGD":  # a random P(j | i): the cost does not depend on the values
        return cls(
            nb_iter=iters, matrix=torch.rand(labels, labels, generator=torch.Generator().manual_seed(0))
        )
    return cls(nb_iter=iters)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor_pass(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    """One forward + gradient w.r.t. the input only (the weights are frozen by the caller)."""
    xi = x.detach().requires_grad_(True)
    loss = attacks.base.summed_bce(model(xi), target).sum()
    torch.autograd.grad(loss, xi)


def bench(
    model_name: str, names: list[str], iters: int, batch: int, labels: int, repeats: int, device
) -> None:
    size = SIZES[model_name]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g).to(device)
    model = Standardised(build_model(model_name, labels, device), x).eval()
    target = torch.ones(batch, labels, device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    floor = median_time(lambda: floor_pass(model, x, target), repeats, device) / batch
    for p in model.parameters():
        p.requires_grad_(True)
    print(
        f"\n{model_name} @ {size}x{size}, batch {batch}, C = {labels}, {device}: floor {1e3 * floor:.1f} ms/sample"
    )
    print(f"{'attack':<8} {'ms/sample-iter':>15} {'ratio':>7} {'target':>7}  iterations/sample")
    for name in names:
        attack = make_attack(name, iters, labels)
        result: list[attacks.AttackResult] = []

        def run(attack=attack, result=result) -> None:
            result[:] = [attack.run(model, x, target, diagnostics=False)]  # as the evaluation loop calls it

        total = median_time(run, repeats if name not in PER_LABEL else 1, device)
        steps = int(result[0].iterations.sum())
        goal = labels + 2 if name in PER_LABEL else 1.10
        if steps == 0:  # nothing to divide by: the time is the checks before a first iteration, not a rate
            print(
                f"{name:<8} {'did not iterate':>15} {'-':>7} {goal:>7.2f}  0.0 ({1e3 * total:.0f} ms for the batch)"
            )
            continue
        per = total / steps
        flag = "ok" if per / floor <= goal else "SLOW"
        print(f"{name:<8} {1e3 * per:>15.1f} {per / floor:>7.2f} {goal:>7.2f}  {steps / batch:.1f} {flag}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, choices=list(SIZES), help="default: all")
    ap.add_argument(
        "--attacks", nargs="+", default=None, help="default: every attack mlattack.attacks exports"
    )
    ap.add_argument(
        "--iters", type=int, default=10, help="iterations per attack (one-step attacks ignore it)"
    )
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--labels", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--quick", action="store_true", help="3 iterations, 1 repeat, ResNet-18 only unless --models says"
    )
    args = ap.parse_args()
    if args.quick:
        args.models, args.iters, args.repeats = args.models or ["resnet18"], 3, 1
    args.models = args.models or list(SIZES)
    names = args.attacks or [n for n in ORDER if hasattr(attacks, n)]
    for n in names:
        if not hasattr(attacks, n):
            raise SystemExit(f"--attacks: {n!r} is not exported by mlattack.attacks")
    for model_name in args.models:
        bench(model_name, names, args.iters, args.batch, args.labels, args.repeats, torch.device(args.device))


if __name__ == "__main__":
    main()
