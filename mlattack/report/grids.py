"""Sensitivity grids (``sweep:`` over several arguments at once): success(n) heatmaps over the grid.

The runner tags each grid child with ``mlattack.grid_base``, ``mlattack.grid_params`` (the swept arguments in
order) and ``mlattack.grid.<argument>`` (its value). One grid is one (network, dataset, base attack, arguments); the
first two arguments are the heatmap's axes, any further ones split it into rows of panels. The study's setting (the
values in ``configs/attack/<attack>.yaml``) is outlined in red where the grid contains it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from mlattack.report.collect import AttackRun
from mlattack.report.plots import plt
from mlattack.report.tables import SCENARIO_COLUMNS, add_intervals
from mlattack.resources import config_dir

GRID_BASE_TAG, GRID_PARAMS_TAG, GRID_VALUE_PREFIX = (
    "mlattack.grid_base",
    "mlattack.grid_params",
    "mlattack.grid.",
)
HEATMAP_SCENARIOS = (0, 1, 2, 3)


@dataclass
class Grid:
    network: str
    dataset: str
    attack: str
    params: tuple[str, ...]
    table: pd.DataFrame  # one row per point: the arguments' values, n=0..7 (%), N, run_id

    @property
    def stem(self) -> str:
        return f"grid_{self.network}_{self.dataset}_{self.attack}_{'-'.join(self.params)}"

    def points(self) -> pd.DataFrame:
        """The table without run ids, one row per point named like ``eps=0.1, nb_iter=10``."""
        frame = self.table.drop(columns=["run_id"])
        frame.index = [
            ", ".join(
                f"{p}={row[p]:g}" if isinstance(row[p], float) else f"{p}={row[p]}" for p in self.params
            )
            for _, row in frame.iterrows()
        ]
        frame.index.name = "point"
        for p in self.params:  # labels, not numbers: the tables round floats to one decimal (0.001 -> 0.0)
            frame[p] = [f"{v:g}" if isinstance(v, float) else str(v) for v in frame[p]]
        return add_intervals(frame, {c: "N" for c in SCENARIO_COLUMNS if c in frame.columns})


def _value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def sensitivity_grids(runs: list[AttackRun]) -> list[Grid]:
    """One :class:`Grid` per swept (network, dataset, attack, arguments); the latest run per point wins."""
    points: dict[tuple, dict[tuple, AttackRun]] = {}
    for r in sorted(runs, key=lambda r: r.start_time):
        if GRID_BASE_TAG not in r.tags or GRID_PARAMS_TAG not in r.tags:
            continue
        params = tuple(r.tags[GRID_PARAMS_TAG].split(","))
        try:
            point = tuple(_value(r.tags[GRID_VALUE_PREFIX + p]) for p in params)
        except KeyError:
            continue
        points.setdefault((r.network, r.dataset, r.tags[GRID_BASE_TAG], params), {})[point] = r
    grids = []
    for (network, dataset, attack, params), by_point in sorted(points.items()):
        rows = [
            {
                **dict(zip(params, point, strict=True)),
                **{f"n={k}": 100.0 * s for k, s in enumerate(r.success)},
                "N": r.num_samples,
                "run_id": r.run_id,
            }
            for point, r in sorted(by_point.items(), key=lambda kv: [str(v) for v in kv[0]])
        ]
        table = pd.DataFrame(rows).sort_values(list(params)).reset_index(drop=True)
        grids.append(Grid(network, dataset, attack, params, table))
    return grids


def study_setting(attack: str) -> dict[str, object]:
    """The init arguments of the study's config for ``attack`` (``configs/attack/<attack lowercased>.yaml``)."""
    path = config_dir() / "attack" / f"{attack.lower().replace('-', '')}.yaml"
    if not path.is_file():
        return {}
    spec = yaml.safe_load(path.read_text()) or {}
    return dict(spec.get("init_args") or {})


def grid_heatmaps(grid: Grid, title: str, path: Path) -> Path:
    """Panels: columns scenarios n (0..3), rows the combinations of the arguments beyond the first two; each panel
    a heatmap of success (%) over the first two arguments, the study's setting outlined."""
    t = grid.table
    y_arg = grid.params[0]
    x_arg = grid.params[1] if len(grid.params) > 1 else None
    extra = list(grid.params[2:])
    combos = list(itertools.product(*(sorted(t[a].unique(), key=str) for a in extra))) or [()]
    ys = sorted(t[y_arg].unique(), key=lambda v: (isinstance(v, str), v))
    xs = sorted(t[x_arg].unique(), key=lambda v: (isinstance(v, str), v)) if x_arg else [None]
    study = study_setting(grid.attack)
    fig, axes = plt.subplots(
        len(combos),
        len(HEATMAP_SCENARIOS),
        squeeze=False,
        figsize=(3.0 * len(HEATMAP_SCENARIOS), 0.45 * len(ys) * len(combos) + 1.8),
    )
    for i, combo in enumerate(combos):
        sub = t
        for a, v in zip(extra, combo, strict=True):
            sub = sub[sub[a] == v]
        for j, n in enumerate(HEATMAP_SCENARIOS):
            ax = axes[i][j]
            grid_values = np.full((len(ys), len(xs)), np.nan)
            for _, row in sub.iterrows():
                grid_values[ys.index(row[y_arg]), xs.index(row[x_arg]) if x_arg else 0] = row[f"n={n}"]
            ax.imshow(grid_values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
            for (a, b), v in np.ndenumerate(grid_values):
                if not np.isnan(v):
                    ax.text(
                        b,
                        a,
                        f"{v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v < 60 else "black",
                    )
            ax.set_yticks(
                range(len(ys)), [f"{v:g}" if isinstance(v, float) else str(v) for v in ys], fontsize=7
            )
            ax.set_xticks(
                range(len(xs)), [f"{v:g}" if isinstance(v, float) else str(v) for v in xs], fontsize=7
            )
            ax.set_xlabel(x_arg or "", fontsize=8)
            ax.set_ylabel(y_arg, fontsize=8)
            head = f"n={n}" + (
                "".join(
                    f", {a}={v:g}" if isinstance(v, float) else f", {a}={v}"
                    for a, v in zip(extra, combo, strict=True)
                )
            )
            ax.set_title(head, fontsize=8)
            in_study = all(
                a in study and float(study[a]) == float(v) for a, v in zip(extra, combo, strict=True)
            )
            if in_study and y_arg in study and (x_arg is None or x_arg in study):
                sy = float(study[y_arg])
                sx = float(study[x_arg]) if x_arg else None
                if sy in ys and (x_arg is None or sx in xs):
                    ax.add_patch(
                        plt.Rectangle(
                            (xs.index(sx) - 0.5 if x_arg else -0.5, ys.index(sy) - 0.5),
                            1,
                            1,
                            fill=False,
                            edgecolor="red",
                            linewidth=2,
                        )
                    )
    fig.suptitle(title + " (red: the study's setting)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
