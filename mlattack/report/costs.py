"""The cost of every attack (the study's missing computational analysis): a table and a "success vs cost" figure.

Numbers come from the attack runs' ``cost/*`` and ``time/*`` metrics (:mod:`mlattack.evaluation.cost`): wall time
per sample, the attacked network's forward and backward passes per sample inside the attack (judging the returned
images is not counted) and the peak memory of one attack batch above what was in use when it started. Passes are
the machine-independent cost; seconds depend on the machine and its load, so both are drawn.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.ticker
import numpy as np
import pandas as pd

from mlattack.report.collect import AttackRun
from mlattack.report.plots import attack_colour, plt
from mlattack.report.tables import SCENARIO_COLUMNS

COST_COLUMNS = {
    "ms/sample": "seconds_per_sample",
    "fwd/sample": "forwards_per_sample",
    "bwd/sample": "backwards_per_sample",
    "peak MB": "peak_memory_mb",
}


def cost_table(runs: list[AttackRun]) -> pd.DataFrame | None:
    """Per attack: N, ms/sample, fwd/sample, bwd/sample, peak MB, labels shown, success (%) n=0..7; None when no
    run has measured passes (stores written before costs were logged)."""
    if not any("forwards_per_sample" in r.metrics for r in runs):
        return None
    rows = {}
    for r in runs:
        m = r.metrics
        row = {"N": r.num_samples, **{c: m.get(k, np.nan) for c, k in COST_COLUMNS.items()}}
        row["ms/sample"] *= 1000.0
        row["labels shown"] = m.get("labels_shown_mean", np.nan)
        row.update({c: 100.0 * s for c, s in zip(SCENARIO_COLUMNS, r.success, strict=True)})
        rows[r.attack] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "attack"
    return frame


def memory_measure(runs: list[AttackRun]) -> str:
    """What "peak MB" means for these runs (it depends on the device they ran on)."""
    devices = {str(r.params.get("device", "")).split(":")[0] for r in runs}
    kinds = {"cuda": "CUDA max_memory_allocated", "cpu": "resident-set high-water mark"}
    return ", ".join(kinds.get(d, f"{d or 'unknown device'}: not measured") for d in sorted(devices))


def spread_scenario(frame: pd.DataFrame) -> int:
    """The scenario n whose success differs most between the attacks (the most telling y-axis)."""
    spread = [
        np.nanmax(v) - np.nanmin(v) if np.isfinite(v).any() else -1.0
        for v in frame[SCENARIO_COLUMNS].T.values
    ]
    return int(np.argmax(spread))


def success_vs_cost(frame: pd.DataFrame, title: str, path: Path) -> Path:
    """Two panels, one point per attack: mean labels shown vs network passes per sample (forward + backward),
    and success (%) at the most telling scenario vs wall seconds per sample. Points of a sweep or grid
    (``BIM[eps=...]``) share their attack's colour and carry no label, so a grid reads as a cloud."""
    n = spread_scenario(frame)
    passes = frame["fwd/sample"] + frame["bwd/sample"]
    panels = (
        (
            passes,
            frame["labels shown"],
            "network passes per sample (forward + backward)",
            "mean labels shown",
        ),
        (
            frame["ms/sample"] / 1000.0,
            frame[f"n={n}"],
            "wall seconds per sample (machine load included)",
            f"success at n={n} (%)",
        ),
    )
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.8))
    for ax, (x, y, xlabel, ylabel) in zip(axes, panels, strict=True):
        seen: set[str] = set()
        placed: list[tuple[float, float]] = []  # labelled points so far: stack the labels of coinciding ones
        near = 0.04 * (np.nanmax(y.to_numpy(float)) - np.nanmin(y.to_numpy(float)) or 1.0)
        for name in frame.index:
            if not (np.isfinite(x[name]) and np.isfinite(y[name])) or x[name] <= 0:
                continue
            base = name.split("[", 1)[0]
            point = base != name
            ax.scatter(
                x[name],
                y[name],
                s=18 if point else 60,
                alpha=0.55 if point else 0.95,
                color=attack_colour(name),
                marker="o" if point else "D",
                edgecolors="none" if point else "black",
                label=(f"{base} (grid/sweep)" if point else None) if base not in seen else None,
            )
            if point:
                seen.add(base)
            else:
                k = sum(abs(np.log(px / x[name])) < 0.05 and abs(py - y[name]) < near for px, py in placed)
                placed.append((x[name], y[name]))
                ax.annotate(
                    name, (x[name], y[name]), xytext=(5, 3 - 9 * k), textcoords="offset points", fontsize=7
                )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if seen:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def cost_section(runs: list[AttackRun], title: str, figure: Path) -> tuple[pd.DataFrame, str, Path] | None:
    """(table, caption, figure) of one network and dataset, or None when its runs logged no cost."""
    frame = cost_table(runs)
    if frame is None:
        return None
    named = frame[[("[" not in name) for name in frame.index]]
    caption = (
        f"Cost per attack, {title}: wall milliseconds per sample, forward and backward passes of the attacked "
        "network per sample inside the attack (judging the images not counted), peak memory of one attack batch "
        f"above its start ({memory_measure(runs)}), mean labels shown and success (%)"
    )
    if 0 < len(named) < len(frame):  # a grid's points would bury the attacks; the figure shows them all
        caption += (
            f"; the {len(frame) - len(named)} sweep and grid points are in the figure and in their own tables"
        )
        return named, caption, success_vs_cost(frame, f"Success vs cost: {title}", figure)
    return frame, caption, success_vs_cost(frame, f"Success vs cost: {title}", figure)
