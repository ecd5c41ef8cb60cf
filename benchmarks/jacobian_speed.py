"""The three per-label Jacobian strategies of :mod:`mlattack.attacks.jacobian`, timed side by side on one device.

For each model: the floor (one forward + input-gradient pass of the batch) and each strategy's time for the (N, C, D)
Jacobian, as ms per sample and as a ratio to the floor; the fastest is marked. The per-device default
(``jacobian.DEFAULTS``) should name the strategy that wins here; ``MLATTACK_JACOBIAN`` overrides it.

    python benchmarks/jacobian_speed.py --device cuda --models resnet101 effnet_lite0 --batch 32
    python benchmarks/jacobian_speed.py --device cpu --models cheap resnet18 --batch 2 --size 224
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mlattack.attacks.jacobian import DEFAULTS, STRATEGIES, label_jacobian


def build(name: str, labels: int, device: torch.device) -> torch.nn.Module:
    import timm
    import torchvision
    from torch import nn

    torch.manual_seed(0)
    if name == "cheap":
        from host_share import CheapNet

        net = CheapNet(labels)
    elif name == "effnet_lite0":
        net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=labels)
    else:
        net = getattr(torchvision.models, name)(weights=None)
        net.fc = nn.Linear(net.fc.in_features, labels)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device).eval()


def timed(fn, device: torch.device, repeats: int) -> float:
    def once() -> float:
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet101", "effnet_lite0"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--labels", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(
        f"| model | strategy | ms/sample | / floor |  ({device}, {args.size}², batch {args.batch}, C = {args.labels})"
    )
    print("|---|---|---|---|")
    for name in args.models:
        net = build(name, args.labels, device)
        x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(
            device
        )

        def floor(net=net, x=x) -> None:
            xi = x.detach().requires_grad_(True)
            torch.autograd.grad(net(xi).sum(), xi)

        base = timed(floor, device, args.repeats) / args.batch
        times = {}
        for s in args.strategies:
            try:
                times[s] = timed(
                    lambda s=s, net=net, x=x: label_jacobian(net, x, strategy=s), device, args.repeats
                )
                times[s] /= args.batch
            except torch.OutOfMemoryError:
                times[s] = float("nan")
                torch.cuda.empty_cache()
        best = min((t, s) for s, t in times.items() if t == t)[1]
        print(f"| {name} | floor | {1e3 * base:.1f} | 1.00 |")
        for s, t in times.items():
            mark = " (fastest)" if s == best else ""
            print(f"| {name} | {s}{mark} | {1e3 * t:.1f} | {t / base:.2f} |")
    print(f"\ndefault on {device.type}: {DEFAULTS.get(device.type, 'loop')} (MLATTACK_JACOBIAN overrides)")


if __name__ == "__main__":
    main()
