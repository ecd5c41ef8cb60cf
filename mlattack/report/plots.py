"""Figures for a paper: success vs scenario n, success vs budget, and the label heatmap.

Every attack keeps one colour in every figure (:func:`attack_colour`): the study's nine attacks have fixed slots
of the tab10 palette, any other name a slot of tab20 chosen by a hash of its name, so a colour never depends on
which runs a report happens to include.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files and MLflow

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlattack.report.collect import STUDY_ORDER, base_attack  # noqa: E402
from mlattack.report.tables import SCENARIO_COLUMNS  # noqa: E402

LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def attack_colour(name: str) -> str:
    """The colour of an attack (by its study attack when the name derives from one: ``PGD[eps=0.01]`` -> PGD)."""
    base = base_attack(name)
    if base in STUDY_ORDER:
        return matplotlib.colors.to_hex(plt.get_cmap("tab10")(STUDY_ORDER.index(base)))
    slot = zlib.crc32(base.encode()) % 20
    return matplotlib.colors.to_hex(plt.get_cmap("tab20")(slot))


def _styles(names: list[str]) -> dict[str, tuple[str, str, str]]:
    """(colour, linestyle, marker) per name; names that share a colour differ by line style."""
    seen: dict[str, int] = {}
    out = {}
    for name in names:
        colour = attack_colour(name)
        k = seen.get(colour, 0)
        seen[colour] = k + 1
        out[name] = (colour, LINESTYLES[k % len(LINESTYLES)], MARKERS[k % len(MARKERS)])
    return out


def success_vs_n(table: pd.DataFrame, title: str, path: Path, exp_labels: list[float] | None = None) -> Path:
    """One line per attack: success rate (%) over scenarios n = 0..7 (rows of a :func:`success_table`)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    n = np.arange(len(SCENARIO_COLUMNS))
    styles = _styles(list(table.index))
    for name, row in table.iterrows():
        colour, ls, marker = styles[name]
        ax.plot(
            n,
            row[SCENARIO_COLUMNS].to_numpy(float),
            color=colour,
            linestyle=ls,
            marker=marker,
            label=str(name),
            linewidth=1.8,
            markersize=4,
        )
    ax.set_xticks(n)
    if exp_labels:
        ax.set_xticklabels([f"{k}\n({e:.1f})" for k, e in zip(n, exp_labels, strict=False)], fontsize=8)
        ax.set_xlabel("scenario n  (labels to show: expLabels = avgLabels + 2ⁿ)")
    else:
        ax.set_xlabel("scenario n")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2 if len(table) > 5 else 1, loc="best")
    return _save(fig, path)


def success_vs_budget(curve: pd.DataFrame, param: str, title: str, path: Path) -> Path:
    """One line per scenario n: success rate (%) over the swept budget values (index of ``curve``)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = curve.index.to_numpy(float)
    cmap = plt.get_cmap("viridis")
    for k, col in enumerate(SCENARIO_COLUMNS):
        ax.plot(
            x,
            curve[col].to_numpy(float),
            marker=MARKERS[k],
            color=cmap(k / (len(SCENARIO_COLUMNS) - 1)),
            label=col,
            linewidth=1.6,
            markersize=4,
        )
    if len(x) > 1 and x.min() > 0 and x.max() / x.min() >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(f"budget: {param}")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(title="scenario", fontsize=8, ncol=2)
    return _save(fig, path)


def label_heatmap(
    rates: pd.DataFrame, title: str, path: Path, frequency_source: str = "training split"
) -> Path:
    """Attack × label matrix of "turned on" rates (%); labels ordered as the columns of ``rates``."""
    values = 100.0 * rates.to_numpy(float)
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.32 * rates.shape[1] + 2.5), max(2.5, 0.45 * rates.shape[0] + 1.8))
    )
    im = ax.imshow(np.ma.masked_invalid(values), cmap="magma", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(rates.shape[1]))
    ax.set_xticklabels(rates.columns, rotation=70, ha="right", fontsize=7)
    ax.set_yticks(range(rates.shape[0]))
    ax.set_yticklabels(rates.index, fontsize=8)
    ax.set_xlabel(f"label (most frequent first; frequency from the {frequency_source.split(' (')[0]})")
    ax.set_ylabel("attack")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="turned on (% of samples without the label)")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
