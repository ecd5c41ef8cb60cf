"""Device-hours for the study grid, from iteration counts measured on a trained victim, paper mode and fast mode.

The grid (the study's, docs/PROTOCOL.md): 2 victims (ML-GCN on ResNet-101 448², ML-LIW on Inception-v3 299²) x 4
datasets x 1000 samples for every attack but MLA-LP (200 samples), 9 attacks with the study's settings
(configs/attack/<name>.yaml). A sample's cost is its iterations times the attack's cost per sample-iteration.

- **Iterations per sample** are measured here, on the demo victim (ML-GCN with the tiny trunk, 64², trained on the
  built-in synthetic data; trained in-process when no ``--demo_checkpoint`` exists): *paper mode* runs each attack as
  its config says (ML-CW's 10 x 1000 with its stall rule and abort, ML-DP's and MLA-LP's own stops, the gradient
  attacks their whole budget), in the study's groups of 10; *fast mode* stops a sample once it shows every label
  (``early_stop``), as mlattack's fast mode does. A tiny synthetic victim is a proxy for ResNet-101 on VOC/COCO:
  how fast a real victim gives in is what the GPU run must confirm.
- **Cost per sample-iteration** comes from an ``attack_speed.py`` log of the device (its last model block, e.g.
  ResNet-101 448² batch 32), or else from the H200 measurements of issue 25 (ResNet-101 448², batch 32, fp32):
  the floor 1.83 ms/sample, the gradient attacks and ML-CW at 1.05x of it, ML-DP 22 ms (the per-label loop's whole
  iteration, 702 ms per 32 samples), MLA-LP 121 ms (the upper end of 88-121). ML-LIW's Inception-v3 at 299² costs
  less than ResNet-101 at 448², so taking ResNet-101's cost for both victims is an upper bound.

    python benchmarks/study_estimate.py                          # H200 costs of issue 25, demo trained here
    python benchmarks/study_estimate.py --speeds speed.log --demo_checkpoint demo.pt
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from loop_models import demo_model  # noqa: E402

import mlattack.attacks as attacks  # noqa: E402

CONFIGS = Path(__file__).parent.parent / "mlattack" / "configs" / "attack"
ATTACKS = ["FGSM", "FGM", "BIM", "PGD", "MIFGSM", "SLIDE", "MLCW", "MLDP", "MLALP"]
SAMPLES = {name: 2 * 4 * (200 if name == "MLALP" else 1000) for name in ATTACKS}  # victims x datasets x N
FLOOR_H200 = 1.83  # ms/sample, ResNet-101 448² batch 32 fp32 (issue 25)
H200_MS = {n: 1.05 * FLOOR_H200 for n in ATTACKS} | {"MLDP": 22.0, "MLALP": 121.0}
FIXED_BUDGET = {"FGSM", "FGM", "BIM", "PGD", "MIFGSM", "SLIDE"}
GROUP = 10  # the study's adv_batch_size: ML-CW's and MLA-LP's reference variants couple a group


def read_speeds(text: str) -> dict[str, float]:
    """``attack -> ms/sample-iter`` of the last model block in an attack_speed log (rows that iterated)."""
    blocks = re.split(r"\n(?=\S+ @ \d+x\d+)", text)
    rows = re.findall(r"^(\w+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+", blocks[-1], re.M)
    return {name: float(ms) for name, ms in rows if name in ATTACKS}


def build(name: str, fast: bool) -> attacks.Attack:
    config = yaml.safe_load((CONFIGS / f"{name.lower()}.yaml").read_text())
    cls = getattr(attacks, config["class_path"].rsplit(".", 1)[1])
    kwargs = dict(config.get("init_args") or {})
    if fast:
        kwargs["early_stop"] = True
    return cls(**kwargs)


def iterations(name: str, net, x, y, fast: bool, limit: int) -> tuple[float, float]:
    """Mean iterations per sample over the first ``limit`` samples in groups of 10, and the seconds it took.

    A gradient attack without early stop runs its whole budget on every sample: paper mode's count is ``nb_iter``
    (1 for FGSM, FGM) by definition and is not run."""
    start, total, n = time.perf_counter(), 0, min(limit, len(x))
    attack = build(name, fast)
    if name in FIXED_BUDGET and not attack.early_stop:
        return float(getattr(attack, "nb_iter", 1)), 0.0
    for lo in range(0, n, GROUP):
        total += int(attack.run(net, x[lo : min(lo + GROUP, n)], y[lo : min(lo + GROUP, n)]).iterations.sum())
    return total / n, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--speeds", help="an attack_speed.py log of the device (default: issue 25's H200 numbers)"
    )
    ap.add_argument(
        "--demo_checkpoint", help="a .pt state dict of the demo model (trained and saved if absent)"
    )
    ap.add_argument("--demo_epochs", type=int, default=6)
    ap.add_argument("--samples", type=int, default=20, help="victim samples per attack (MLA-LP: half)")
    ap.add_argument(
        "--mlcw_samples", type=int, default=10, help="ML-CW's samples (up to 10 x 1000 steps each)"
    )
    ap.add_argument("--attacks", nargs="+", default=ATTACKS, choices=ATTACKS)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    speeds, source = dict(H200_MS), "H200, issue 25 (ResNet-101 448², batch 32, fp32)"
    if args.speeds:
        measured = read_speeds(Path(args.speeds).read_text())
        speeds |= measured
        source = f"{args.speeds} ({', '.join(measured) or 'no rows'}; the rest from issue 25's H200 numbers)"
    net, x, _ = demo_model(args.demo_checkpoint, args.samples, args.device, epochs=args.demo_epochs)
    y = torch.ones(len(x), 20, device=x.device)  # the study's target: show every label
    print(
        f"\niterations measured on the demo victim ({len(x)} samples, {args.device}); cost per sample-iteration: {source}\n"
    )
    print(
        "| attack | ms/sample-iter | samples in grid | iterations/sample paper | fast | hours paper | hours fast |"
    )
    print("|---|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    for name in args.attacks:
        limit = {"MLALP": args.samples // 2, "MLCW": args.mlcw_samples}.get(name, args.samples)
        paper, t_paper = iterations(name, net, x, y, False, limit)
        fast, t_fast = iterations(name, net, x, y, True, limit)
        hours = [speeds[name] * it * SAMPLES[name] / 3.6e6 for it in (paper, fast)]
        totals = [a + b for a, b in zip(totals, hours, strict=True)]
        print(
            f"| {name} | {speeds[name]:.1f} | {SAMPLES[name]:,} | {paper:.1f} | {fast:.1f} | {hours[0]:.2f} | "
            f"{hours[1]:.2f} |",
            flush=True,
        )
        print(f"  ({name}: measured in {t_paper:.0f} s + {t_fast:.0f} s)", file=sys.stderr)
    print(
        f"\nstudy grid ({len(args.attacks)} attacks): paper mode {totals[0]:.2f} device-hours, "
        f"fast mode {totals[1]:.2f} device-hours (goal < 4)"
    )


if __name__ == "__main__":
    main()
