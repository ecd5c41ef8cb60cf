"""GPU-hours for the study grid from an ``attack_speed.py`` log: 2 models x 4 datasets x 9 attacks x 1000 samples.

Reads the ``ms/sample-iter`` column of every attack that ``attack_speed.py`` printed (the last model block, e.g.
ResNet-101 at 448² batch 32: the study's ML-GCN trunk; ML-LIW's Inception-v3 at 299² costs less, so this is an upper
bound) and multiplies it by each attack's *most* iterations per sample under the study's settings (early stop and
ML-CW's abort can only shorten them). Prints the table and the total.

    python benchmarks/attack_speed.py --models resnet101 --batch 32 | tee speed.log
    python benchmarks/study_estimate.py speed.log
"""

from __future__ import annotations

import re
import sys

#: most gradient steps (or solver iterations) per sample under configs/attack/*.yaml (the study's values)
STUDY_ITERATIONS = {
    "FGSM": 1,
    "FGM": 1,
    "BIM": 30,
    "PGD": 30,
    "MIFGSM": 30,
    "SLIDE": 30,
    "MLCW": 10 * 1000,  # binary_search_steps x max_iter; abort_early cuts most of it in practice
    "MLDP": 20,  # its ms/sample-iter already holds the per-label Jacobian
    "MLALP": 20,
}
GRID_SAMPLES = 2 * 4 * 1000  # models x datasets x samples, per attack


def read_speeds(text: str) -> dict[str, float]:
    """``attack -> ms/sample-iter`` of the last model block in an attack_speed log."""
    blocks = re.split(r"\n(?=\S+ @ \d+x\d+)", text)
    rows = re.findall(r"^(\w+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+", blocks[-1], re.M)
    return {name: float(ms) for name, ms in rows if name in STUDY_ITERATIONS}


def estimate(speeds: dict[str, float]) -> tuple[list[tuple[str, float, int, float]], float]:
    rows = [
        (n, ms, STUDY_ITERATIONS[n], ms * STUDY_ITERATIONS[n] * GRID_SAMPLES / 3.6e6)
        for n, ms in speeds.items()
    ]
    return rows, sum(r[3] for r in rows)


def main() -> None:
    text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
    speeds = read_speeds(text)
    if not speeds:
        raise SystemExit("no attack rows found (is this an attack_speed.py log?)")
    rows, total = estimate(speeds)
    print(
        "| attack | ms/sample-iter | iterations/sample (at most) | hours for 8,000 samples |\n|---|---|---|---|"
    )
    for name, ms, iters, hours in rows:
        print(f"| {name} | {ms:.1f} | {iters} | {hours:.2f} |")
    missing = sorted(set(STUDY_ITERATIONS) - set(speeds))
    print(
        f"\nstudy grid (2 models x 4 datasets x 1000 samples, {len(rows)} attacks): at most {total:.1f} device-hours"
    )
    if missing:
        print(f"(not measured, left out: {', '.join(missing)})")


if __name__ == "__main__":
    main()
