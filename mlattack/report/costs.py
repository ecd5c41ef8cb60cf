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
from mlattack.report.plots import attack_colour, place_labels, plt
from mlattack.report.tables import HIGH, LOW, SCENARIO_COLUMNS, success_table

COST_COLUMNS = {
    "ms/sample": "seconds_per_sample",
    "fwd/sample": "forwards_per_sample",
    "bwd/sample": "backwards_per_sample",
    "peak MB": "peak_memory_mb",
}


def cost_table(runs: list[AttackRun]) -> pd.DataFrame | None:
    """Per attack: N, ms/sample, fwd/sample, bwd/sample, peak MB (success and labels shown are in the success
    table, printed once); None when no run has measured passes (stores written before costs were logged)."""
    if not any("forwards_per_sample" in r.metrics for r in runs):
        return None
    rows = {}
    for r in runs:
        row = {"N": r.num_samples, **{c: r.metrics.get(k, np.nan) for c, k in COST_COLUMNS.items()}}
        row["ms/sample"] *= 1000.0
        rows[r.attack] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "attack"
    return frame


def _figure_frame(runs: list[AttackRun], costs: pd.DataFrame) -> pd.DataFrame:
    """The cost columns beside the success table's (rates, bounds, labels shown): what the figure draws."""
    success = success_table(runs).drop(columns=["N"])
    return costs.join(success, how="left")


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
    and success (%) at the most telling scenario, with its 95 % Wilson interval, vs wall seconds per sample.
    Points of a sweep or grid (``BIM[eps=...]``) share their attack's colour and carry no label, so a grid reads
    as a cloud; the attacks' labels are placed apart (:func:`mlattack.report.plots.place_labels`)."""
    fig = success_vs_cost_figure(frame, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def success_vs_cost_figure(frame: pd.DataFrame, title: str) -> plt.Figure:
    """The figure of :func:`success_vs_cost`, not yet saved."""
    n = spread_scenario(frame)
    passes = frame["fwd/sample"] + frame["bwd/sample"]
    rate = f"n={n}"
    bars = (
        (frame[rate] - frame[rate + LOW], frame[rate + HIGH] - frame[rate]) if rate + LOW in frame else None
    )
    panels = (
        (
            passes,
            frame["labels shown"],
            "network passes per sample (forward + backward)",
            "mean labels shown",
            None,
        ),
        (
            frame["ms/sample"] / 1000.0,
            frame[rate],
            "wall seconds per sample (machine load included)",
            f"success at n={n} (%, 95 % Wilson interval)",
            bars,
        ),
    )
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.8))
    placing: list[list[tuple[float, float, str]]] = []
    for ax, (x, y, xlabel, ylabel, err) in zip(axes, panels, strict=True):
        seen: set[str] = set()
        labels: list[tuple[float, float, str]] = []
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
            if err is not None and not point:
                ax.errorbar(x[name], y[name], yerr=[[err[0][name]], [err[1][name]]], fmt="none",
                            ecolor=attack_colour(name), elinewidth=1.0, capsize=3, alpha=0.8)  # fmt: skip
            if point:
                seen.add(base)
            else:
                labels.append((float(x[name]), float(y[name]), str(name)))
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        placing.append(labels)
        if seen:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    for ax, labels in zip(axes, placing, strict=True):  # once the layout is final: boxes in display space
        place_labels(ax, labels, fontsize=8)
    return fig


def cost_section(runs: list[AttackRun], title: str, figure: Path) -> tuple[pd.DataFrame, str, Path] | None:
    """(table, caption, figure) of one network and dataset, or None when its runs logged no cost."""
    frame = cost_table(runs)
    if frame is None:
        return None
    drawn = _figure_frame(runs, frame)
    named = frame[[("[" not in name) for name in frame.index]]
    caption = (
        f"Cost per attack, {title}: wall milliseconds per sample, forward and backward passes of the attacked "
        "network per sample inside the attack (judging the images not counted), peak memory of one attack batch "
        f"above its start ({memory_measure(runs)}); N samples per attack as in the success table"
    )
    if 0 < len(named) < len(frame):  # a grid's points would bury the attacks; the figure shows them all
        caption += (
            f"; the {len(frame) - len(named)} sweep and grid points are in the figure and in their own tables"
        )
        return named, caption, success_vs_cost(drawn, f"Success vs cost: {title}", figure)
    return frame, caption, success_vs_cost(drawn, f"Success vs cost: {title}", figure)
