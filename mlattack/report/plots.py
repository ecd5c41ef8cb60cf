"""Figures for a paper: success vs scenario n, success vs budget, and the label heatmap.

Every attack keeps one colour in every figure (:func:`attack_colour`): the study's nine attacks have fixed slots
of the tab10 palette, any other name a slot of tab20 chosen by a hash of its name, so a colour never depends on
which runs a report happens to include. Lines also differ by line style and marker, and are dodged sideways by a
fraction of a scenario, so two attacks with identical rates stay two visible lines; every rate carries its 95 %
Wilson interval (error bars, or a band over a budget axis). Point labels are placed by :func:`place_labels`, which
keeps their boxes apart.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files and MLflow

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mlattack.report.collect import STUDY_ORDER, base_attack  # noqa: E402
from mlattack.report.tables import HIGH, LOW, SCENARIO_COLUMNS  # noqa: E402

LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
DODGE = 0.4  # the width (in scenarios) over which the lines of one figure are spread sideways


def attack_colour(name: str) -> str:
    """The colour of an attack (by its study attack when the name derives from one: ``PGD[eps=0.01]`` -> PGD)."""
    base = base_attack(name)
    if base in STUDY_ORDER:
        return matplotlib.colors.to_hex(plt.get_cmap("tab10")(STUDY_ORDER.index(base)))
    slot = zlib.crc32(base.encode()) % 20
    return matplotlib.colors.to_hex(plt.get_cmap("tab20")(slot))


def styles(names: list[str]) -> dict[str, tuple[str, str, str]]:
    """(colour, linestyle, marker) per name: the attack's colour, and a (line style, marker) pair no other line of
    the figure has (up to 20 lines), so lines stay apart where colours are alike or curves coincide."""
    return {
        name: (attack_colour(name), LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)])
        for i, name in enumerate(names)
    }


def _bars(table: pd.DataFrame, name: str) -> np.ndarray | None:
    """(2, 8) error-bar lengths below and above each rate of row ``name``, or None without bounds."""
    if not all(c + LOW in table.columns for c in SCENARIO_COLUMNS):
        return None
    row = table.loc[name]
    rate = row[SCENARIO_COLUMNS].to_numpy(float)
    low = row[[c + LOW for c in SCENARIO_COLUMNS]].to_numpy(float)
    high = row[[c + HIGH for c in SCENARIO_COLUMNS]].to_numpy(float)
    return np.nan_to_num(np.stack([rate - low, high - rate]))


def success_vs_n(table: pd.DataFrame, title: str, path: Path, exp_labels: list[float] | None = None) -> Path:
    """One line per attack: success rate (%) over scenarios n = 0..7 with 95 % Wilson error bars (rows of a
    :func:`success_table`), each line dodged sideways so coinciding curves stay visible."""
    return _save(success_vs_n_figure(table, title, exp_labels), path)


def success_vs_n_figure(table: pd.DataFrame, title: str, exp_labels: list[float] | None = None) -> plt.Figure:
    """The figure of :func:`success_vs_n`, not yet saved."""
    fig, ax = plt.subplots(figsize=(8.0, 5.2))
    n = np.arange(len(SCENARIO_COLUMNS))
    style = styles(list(table.index))
    shift = np.linspace(-DODGE / 2, DODGE / 2, len(table)) if len(table) > 1 else np.zeros(1)
    for i, name in enumerate(table.index):
        colour, ls, marker = style[name]
        drawn = ax.errorbar(
            n + shift[i],
            table.loc[name, SCENARIO_COLUMNS].to_numpy(float),
            yerr=_bars(table, name),
            color=colour,
            linestyle=ls,
            marker=marker,
            label=str(name),
            linewidth=1.6,
            markersize=5,
            elinewidth=0.8,
            capsize=2,
        )
        for part in (*drawn.lines[1], *drawn.lines[2]):  # bars lighter than the line they belong to
            part.set_alpha(0.45)
    ax.set_xticks(n)
    if exp_labels:
        ax.set_xticklabels([f"{k}\n({e:.1f})" for k, e in zip(n, exp_labels, strict=False)], fontsize=8)
        ax.set_xlabel("scenario n  (labels to show: expLabels = avgLabels + 2ⁿ)")
    else:
        ax.set_xlabel("scenario n")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, ncol=2 if len(table) > 5 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def success_vs_budget(curve: pd.DataFrame, param: str, title: str, path: Path) -> Path:
    """One line per scenario n: success rate (%) over the swept budget values (index of ``curve``), with the
    95 % Wilson band of each distinct curve."""
    return _save(success_vs_budget_figure(curve, param, title), path)


def success_vs_budget_figure(curve: pd.DataFrame, param: str, title: str) -> plt.Figure:
    """The figure of :func:`success_vs_budget`, not yet saved."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    x = curve.index.to_numpy(float)
    cmap = plt.get_cmap("viridis")
    banded: set[tuple] = set()  # scenarios with equal rates share a band: stacking it would only darken it
    for k, col in enumerate(SCENARIO_COLUMNS):
        colour = cmap(k / (len(SCENARIO_COLUMNS) - 1))
        ax.plot(
            x,
            curve[col].to_numpy(float),
            marker=MARKERS[k],
            linestyle=LINESTYLES[k % len(LINESTYLES)],
            color=colour,
            label=col,
            linewidth=1.6,
            markersize=4,
        )
        band = (tuple(curve[col + LOW]), tuple(curve[col + HIGH])) if col + LOW in curve.columns else None
        if band is not None and band not in banded:  # the 95 % Wilson band, once per distinct band
            banded.add(band)
            ax.fill_between(x, curve[col + LOW].to_numpy(float), curve[col + HIGH].to_numpy(float),
                            color=colour, alpha=0.1, linewidth=0)  # fmt: skip
    if len(x) > 1 and x.min() > 0 and x.max() / x.min() >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # "3×10⁻²4×10⁻²" ran together
    ax.set_xlabel(f"budget: {param}")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(title="scenario", fontsize=8, ncol=2)
    return fig


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


#: label offsets tried around a point (points of text offset, nearest first): right, left, above, below, diagonals
_DIRECTIONS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)]
_RADII = (5, 12, 20, 30, 42, 56)


def place_labels(ax: plt.Axes, points: list[tuple[float, float, str]], fontsize: float = 8) -> list:
    """Name each (x, y, text) point with a label whose box overlaps no other label and no other point and stays
    inside the axes: offsets around the point are tried nearest first, a leader line drawn for far ones; when
    nothing fits, the offset with the fewest overlaps. Call once the axes' limits and layout are final."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    xy = ax.transData.transform([(x, y) for x, y, _ in points]) if points else np.zeros((0, 2))
    radius = 4.0 * fig.dpi / 72.0  # a marker's half-width in pixels
    taken: list = []
    texts = []
    for i, (x, y, text) in enumerate(points):
        others = [p for j, p in enumerate(xy) if j != i]
        label = ax.annotate(text, (x, y), xytext=(0, 0), textcoords="offset points", fontsize=fontsize)
        best, best_cost = None, None
        for r in _RADII:
            for dx, dy in _DIRECTIONS:
                label.set_position((dx * r, dy * r * 0.8))
                label.set_ha("left" if dx > 0 else "right" if dx < 0 else "center")
                label.set_va("bottom" if dy > 0 else "top" if dy < 0 else "center")
                box = label.get_window_extent(renderer)
                cost = sum(box.overlaps(b) for b in taken)
                cost += sum(box.x0 - radius < px < box.x1 + radius and box.y0 - radius < py < box.y1 + radius
                            for px, py in others)  # fmt: skip
                cost += 0 if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) else 1
                if best_cost is None or cost < best_cost:
                    best, best_cost = (dx * r, dy * r * 0.8, label.get_ha(), label.get_va(), r), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        ox, oy, ha, va, r = best
        label.set_position((ox, oy))
        label.set_ha(ha)
        label.set_va(va)
        if r > _RADII[1]:
            label.remove()
            label = ax.annotate(text, (x, y), xytext=(ox, oy), textcoords="offset points", fontsize=fontsize,
                                ha=ha, va=va, arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})  # fmt: skip
        taken.append(label.get_window_extent(renderer))
        texts.append(label)
    return texts


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
