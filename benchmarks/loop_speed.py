"""End-to-end attack loop: the study's AdverTorch-style loop vs mlattack's, on the same model, samples and attacks.

Three loops, timed side by side in one process for each attack (FGSM, BIM, PGD, MI-FGSM; the study's budgets):

- **reference**: written as the study ran it with AdverTorch 0.2.3 — ``model.train(False)`` with parameters that
  keep ``requires_grad=True``, so every ``loss.backward()`` also computes (and accumulates) parameter gradients;
  every step for every sample; fp32; no early stop; ``.data`` updates.
- **strict**: mlattack's attacks with ``early_stop=False`` (input gradients only, frozen weights). Must produce the
  same adversarial predictions: the per-sample number of labels shown is compared with the reference.
- **fast**: ``mlattack attack --mode fast``: early stop (a sample leaves the batch once it shows every label) on the
  network copy of :func:`mlattack.evaluation.fast.fast_attack_copy` (BatchNorm folded into the convolutions,
  channels_last weights and inputs), ``torch.compile`` with ``--compile`` (off by default: on CPU it did not pay
  off). Its success table must be >= strict in every cell; the labels shown are counted with the original network.

On CUDA (``--device cuda``) two more loops run: **strict-bf16** (strict under bf16 autocast, on the fast copy) and
**fast-bf16**; the success difference bf16 - fp32 per cell is printed with the speed ratio, and an estimate of
GPU-hours for the study's grid. Models: ResNet-18 at 224², ResNet-101 at 448² (random init: speed and equality
only) and the demo ML-GCN (tiny trunk, 64²), trained here for a few epochs so that it can be attacked, or loaded
with ``--demo_checkpoint`` (a ``models:/`` URI, a Lightning checkpoint, or a ``.pt`` state dict from
``--save_demo``). Samples: the first images whose clean prediction is all correct (the study's selection); for
the random-init models the clean prediction is the ground truth (images with >= 1 label shown).

    .venv/bin/python benchmarks/loop_speed.py --quick          # about 10 minutes on 2 busy CPU cores
    .venv/bin/python benchmarks/loop_speed.py --device cuda --samples 64 --batch 32
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torchvision
from torch import nn

from mlattack.attacks import BIM, FGSM, MIFGSM, PGD
from mlattack.attacks.losses import labels_shown, summed_bce
from mlattack.evaluation.fast import fast_attack_copy
from mlattack.evaluation.scenarios import scenario_success, scenario_thresholds

ATTACKS = ("FGSM", "BIM", "PGD", "MIFGSM")
PAPER_EPS = {"FGSM": 0.3, "BIM": 0.1, "PGD": 0.3, "MIFGSM": 0.3}  # docs/PROTOCOL.md; 30 steps of 0.001


# -- the reference loop (AdverTorch 0.2.3 semantics, targeted = descend the loss) ------------------------------
def reference_attack(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, nb_iter: int, eps_iter: float
) -> torch.Tensor:
    model.train(False)
    for p in model.parameters():
        p.requires_grad_(True)  # AdverTorch never freezes the weights: backward fills their .grad too
    if name == "FGSM":  # GradientSignAttack
        xadv = x.clone().requires_grad_()
        loss = -summed_bce(model(xadv), y).sum()  # targeted: negate, then ascend
        loss.backward()
        return (xadv + eps * xadv.grad.sign()).clamp(0, 1).detach()
    delta = torch.zeros_like(x)
    if name == "PGD":  # rand_init_delta
        delta.uniform_(-1, 1)
        delta = eps * delta
        delta = (x + delta).clamp(0, 1) - x
    g = torch.zeros_like(x)
    delta.requires_grad_()
    for _ in range(nb_iter):  # perturb_iterative / LinfMomentumIterativeAttack.perturb
        loss = -summed_bce(model(x + delta), y).sum()
        loss.backward()
        grad = delta.grad.data
        if name == "MIFGSM":
            norm = grad.abs().pow(1).view(len(x), -1).sum(1).pow(1).clamp(min=1e-6)
            g = 1.0 * g + (grad.transpose(0, -1) * (1.0 / norm)).transpose(0, -1)
            delta.data = delta.data + eps_iter * g.sign()
        else:
            delta.data = delta.data + eps_iter * grad.sign()
        delta.data = delta.data.clamp(-eps, eps)
        delta.data = (x + delta.data).clamp(0, 1) - x
        delta.grad.data.zero_()
    return (x + delta).clamp(0, 1).detach()


def our_attack(name: str, eps: float, nb_iter: int, eps_iter: float, early_stop: bool, autocast: str | None):
    kw = {"early_stop": early_stop, "autocast": autocast}
    if name == "FGSM":
        return FGSM(eps=eps, **kw)
    cls = {"BIM": BIM, "PGD": PGD, "MIFGSM": MIFGSM}[name]
    return cls(eps=eps, nb_iter=nb_iter, eps_iter=eps_iter, **kw)


# -- models and samples ---------------------------------------------------------------------------------------
def resnet(depth: int, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes).eval()


def random_samples(model: nn.Module, n: int, size: int, batch: int, device: str):
    """Uniform-noise images whose clean prediction shows >= 1 label; that prediction is their ground truth."""
    gen = torch.Generator().manual_seed(1)
    xs, ys = [], []
    while sum(len(x) for x in xs) < n:
        x = torch.rand(batch, 3, size, size, generator=gen).to(device)
        with torch.no_grad():
            pred = (model(x) >= 0).float()
        keep = pred.sum(1) > 0
        xs.append(x[keep])
        ys.append(pred[keep])
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def demo_model(args, device: str):
    """The demo ML-GCN (tiny trunk, 64²) and its correctly predicted test samples."""
    from mlattack.data.stats import compute_label_stats
    from mlattack.data.synthetic import SyntheticMultiLabel
    from mlattack.models.mlgcn import MLGCN

    def stack(ds, n):
        items = [ds[i] for i in range(min(n, len(ds)))]
        return torch.stack([i["image"] for i in items]), torch.stack([i["target"] for i in items]).float()

    train = SyntheticMultiLabel(split="train", image_size=64, num_samples=args.demo_train)
    if args.demo_checkpoint and not args.demo_checkpoint.endswith(".pt"):
        from mlattack.tracking.registry import load_network

        net = load_network(args.demo_checkpoint)
    else:
        torch.manual_seed(0)
        net = MLGCN(num_classes=20, backbone="tiny", hidden_dim=256)
        stats = compute_label_stats(train)
        net.set_label_graph(stats.cooccurrence_matrix(), stats.label_counts())
        if args.demo_checkpoint:
            net.load_state_dict(torch.load(args.demo_checkpoint, map_location="cpu", weights_only=True))
        else:
            start = time.perf_counter()
            x, y = stack(train, args.demo_train)
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
            net.train()
            for _ in range(args.demo_epochs):
                for idx in torch.randperm(len(x)).split(32):
                    loss = nn.functional.multilabel_soft_margin_loss(net(x[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(net.parameters(), 10.0)
                    opt.step()
            print(
                f"demo model: trained {args.demo_epochs} epochs on {len(x)} images in "
                f"{time.perf_counter() - start:.0f} s"
            )
            if args.save_demo:
                torch.save(net.state_dict(), args.save_demo)
    net = net.eval().to(device)
    x, y = stack(SyntheticMultiLabel(split="test", image_size=64), 4 * args.samples)
    with torch.no_grad():
        pred = torch.cat([(net(b.to(device)) >= 0).float().cpu() for b in x.split(64)])
    keep = ((pred == y).all(1) & (y.sum(1) > 0)).nonzero().flatten()[: args.samples]
    print(f"demo model: {len(keep)} correctly predicted test samples (of {len(x)} scanned)")
    return net, x[keep].to(device), y[keep].to(device)


# -- measurement ----------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, model, x, num_classes: int, batch: int, seed: int, device: str, judge: nn.Module):
    """(seconds, labels shown per sample): attack ``model`` batch by batch towards "all labels", then count the
    labels that ``judge`` (the original network) shows on the results."""
    shown, total = [], 0.0
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        target = torch.ones(len(xb), num_classes, device=xb.device)
        torch.manual_seed(seed + i)  # the same PGD start in every loop
        sync(device)
        start = time.perf_counter()
        adv = fn(model, xb, target)
        sync(device)
        total += time.perf_counter() - start
        with torch.no_grad():
            shown.append(labels_shown(judge(adv.float())).cpu())
    return total, torch.cat(shown)


def success_row(shown: torch.Tensor, y: torch.Tensor) -> list[float]:
    thresholds = scenario_thresholds(float(y.sum(1).float().mean()), y.shape[1])
    return (100 * scenario_success(shown, thresholds).float().mean(0)).tolist()


def bench_model(label: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> None:
    cuda = args.device.startswith("cuda")
    fast_model = fast_attack_copy(model, compile=args.compile)  # what `mlattack attack --mode fast` attacks
    x_cl = x.contiguous(memory_format=torch.channels_last)
    loops = {
        "reference": (
            lambda name: (
                lambda m, a, b: reference_attack(name, m, a, b, PAPER_EPS[name], args.nb_iter, args.eps_iter)
            ),
            model,
            x,
        ),
        "strict": (
            lambda name: our_attack(name, PAPER_EPS[name], args.nb_iter, args.eps_iter, False, None),
            model,
            x,
        ),
        "fast": (
            lambda name: our_attack(name, PAPER_EPS[name], args.nb_iter, args.eps_iter, True, None),
            fast_model,
            x_cl,
        ),
    }
    if cuda:
        loops["strict-bf16"] = (
            lambda name: our_attack(name, PAPER_EPS[name], args.nb_iter, args.eps_iter, False, "bf16"),
            fast_model,
            x_cl,
        )
        loops["fast-bf16"] = (
            lambda name: our_attack(name, PAPER_EPS[name], args.nb_iter, args.eps_iter, True, "bf16"),
            fast_model,
            x_cl,
        )
    print(
        f"\n## {label}: {len(x)} samples, batch {args.batch}, {args.nb_iter} steps of {args.eps_iter}, "
        f"avgLabels {float(y.sum(1).mean()):.2f}, C = {y.shape[1]}, device {device_name(args.device)}\n"
    )
    head = "| attack | " + " | ".join(f"{m} s" for m in loops) + " | strict speed-up | fast speed-up |"
    head += " strict = reference (labels shown) | fast >= strict (cells) |"
    print(head + "\n" + "|---" * (head.count("|") - 1) + "|")
    tables: dict[str, dict[str, list[float]]] = {m: {} for m in loops}
    total = dict.fromkeys(loops, 0.0)
    for name in args.attacks:
        secs, shown = {}, {}
        for mode, (make, m, xs) in loops.items():
            if args.warmup:
                timed(make(name), m, xs[: args.batch], y.shape[1], args.batch, 0, args.device, model)
            secs[mode], shown[mode] = timed(
                make(name), m, xs, y.shape[1], args.batch, 123, args.device, model
            )
            tables[mode][name] = success_row(shown[mode], y)
            total[mode] += secs[mode]
        same = int((shown["strict"] == shown["reference"]).sum())
        ge = sum(f >= s - 1e-9 for f, s in zip(tables["fast"][name], tables["strict"][name], strict=True))
        print(
            f"| {name} | "
            + " | ".join(f"{secs[m]:.2f}" for m in loops)
            + f" | {secs['reference'] / secs['strict']:.2f}x | {secs['reference'] / secs['fast']:.2f}x"
            + f" | {'yes' if same == len(x) else 'NO'} ({same}/{len(x)}) | {ge}/8 |"
        )
    print(
        "| all | "
        + " | ".join(f"{total[m]:.2f}" for m in loops)
        + f" | {total['reference'] / total['strict']:.2f}x | {total['reference'] / total['fast']:.2f}x | | |"
    )
    for mode in loops:
        print(
            f"\nSuccess rate (%), {mode}:\n\n| attack | "
            + " | ".join(f"n={k}" for k in range(8))
            + " |\n"
            + "|---" * 9
            + "|"
        )
        for name, row in tables[mode].items():
            print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    if cuda:
        diff = max(
            abs(a - b)
            for n in args.attacks
            for a, b in zip(tables["strict-bf16"][n], tables["strict"][n], strict=True)
        )
        print(
            f"\nbf16 vs fp32 (strict): max |success difference| = {diff:.1f} points; speed "
            f"{total['strict'] / total['strict-bf16']:.2f}x"
        )
        per_step = total["fast-bf16"] / (len(x) * max(args.nb_iter, 1) * len(args.attacks))
        steps = (
            1 + 1 + 30 * 4 + 20 * 21 + 10 * 1000 + 20 * 21
        )  # FGSM FGM BIM PGD MIFGSM SLIDE MLDP(C+1) MLCW MLALP
        print(
            f"rough study-grid estimate (2 models x 4 datasets x 1000 samples, <= {steps} gradient steps per "
            f"sample over the 9 attacks, at this model's cost per step): {per_step * 8000 * steps / 3600:.1f} "
            f"GPU-hours on {device_name(args.device)}"
        )


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({torch.get_num_threads()} threads)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", default="resnet18,resnet101,demo", help="comma list of resnet18, resnet101, demo"
    )
    p.add_argument("--attacks", default=",".join(ATTACKS))
    p.add_argument(
        "--samples", type=int, default=32, help="samples per model (demo: correctly predicted ones)"
    )
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--nb_iter", type=int, default=30)
    p.add_argument("--eps_iter", type=float, default=0.001)
    p.add_argument(
        "--demo_eps_iter",
        type=float,
        default=None,
        help="step size for the demo model (default --eps_iter); 0.01 lets most samples show every label",
    )
    p.add_argument(
        "--resnet_samples", type=int, default=None, help="samples for the ResNets (default --samples)"
    )
    p.add_argument("--num_classes", type=int, default=20)
    p.add_argument("--demo_epochs", type=int, default=6)
    p.add_argument("--demo_train", type=int, default=2000, help="training images for the demo model")
    p.add_argument("--demo_checkpoint", default=None)
    p.add_argument("--save_demo", default=None, help="save the trained demo model's state dict here (.pt)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the fast loop's model")
    p.add_argument("--warmup", action="store_true", help="one untimed batch per loop first")
    p.add_argument(
        "--quick",
        action="store_true",
        help="2-core CPU sizes: ResNet-18 8 samples, batch 4, 5 steps; ResNet-101 2 samples, batch 2, 2 steps",
    )
    args = p.parse_args()
    args.attacks = [a.strip().upper() for a in args.attacks.split(",") if a.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    sizes = {"resnet18": (18, 224), "resnet101": (101, 448)}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        run_args = copy.copy(args)
        if name in sizes:
            depth, size = sizes[name]
            if args.quick:
                run_args.samples, run_args.batch = (8, 4) if depth == 18 else (2, 2)
                run_args.nb_iter = 5 if depth == 18 else 2
            model = resnet(depth, args.num_classes).to(args.device)
            x, y = random_samples(
                model, run_args.resnet_samples or run_args.samples, size, run_args.batch, args.device
            )
            bench_model(f"ResNet-{depth} {size}² (random init)", model, x, y, run_args)
        elif name == "demo":
            run_args.eps_iter = args.demo_eps_iter or args.eps_iter
            model, x, y = demo_model(run_args, args.device)
            bench_model("demo ML-GCN (tiny trunk) 64²", model, x, y, run_args)
        else:
            raise SystemExit(f"--models: unknown model {name!r}")


if __name__ == "__main__":
    main()
