"""Where the iterative attacks overtake the one-step one: a grid over ``eps`` set against an ``eps`` sweep of FGSM.

The study's BIM/PGD/MI-FGSM budgets (30 steps of 0.001) cannot move a pixel more than 0.03 whatever ``eps`` says,
while FGSM spends its whole ``eps`` in one step, so "iterative beats one-step" depends on the budgets. For every
grid that sweeps ``eps`` (``configs/sweep-study-budgets.yaml``) and every ``eps`` that FGSM was swept at too, this
table puts FGSM's mean labels shown beside the grid's points at that ``eps``: how many beat it, the best, and the
cheapest one that beats it (fewest network passes per sample).
"""

from __future__ import annotations

import pandas as pd

from mlattack.report.collect import AttackRun
from mlattack.report.grids import GRID_BASE_TAG, GRID_PARAMS_TAG, GRID_VALUE_PREFIX

ONE_STEP = "FGSM"


def _label(run: AttackRun, params: list[str]) -> str:
    return ", ".join(f"{p}={run.tags[GRID_VALUE_PREFIX + p]}" for p in params)


def crossover_table(runs: list[AttackRun]) -> pd.DataFrame | None:
    """One row per (grid attack, eps): FGSM's labels shown at that eps, then the grid's points at the same eps
    (rows only where both exist; latest run per point). None when there is nothing to compare."""
    one_step = {
        r.sweep[2]: r
        for r in sorted(runs, key=lambda r: r.start_time)
        if r.sweep and r.sweep[:2] == (ONE_STEP, "eps")
    }
    by_grid: dict[tuple[str, float], dict[str, AttackRun]] = {}
    for r in sorted(runs, key=lambda r: r.start_time):
        params = r.tags.get(GRID_PARAMS_TAG, "").split(",")
        if GRID_BASE_TAG not in r.tags or "eps" not in params:
            continue
        try:
            eps = float(r.tags[GRID_VALUE_PREFIX + "eps"])
        except (KeyError, ValueError):
            continue
        if eps in one_step:
            by_grid.setdefault((r.tags[GRID_BASE_TAG], eps), {})[r.attack] = r
    rows = []
    for (attack, eps), points in sorted(by_grid.items()):
        base = one_step[eps].metrics.get("labels_shown_mean", float("nan"))
        pts = list(points.values())
        params = [p for p in pts[0].tags[GRID_PARAMS_TAG].split(",") if p != "eps"]
        shown = {r.attack: r.metrics.get("labels_shown_mean", float("nan")) for r in pts}
        best = max(pts, key=lambda r: shown[r.attack])
        beat = [r for r in pts if shown[r.attack] > base]
        # fewest passes (the machine-independent cost), then the most labels shown
        cheapest = min(
            beat,
            key=lambda r: (r.metrics.get("forwards_per_sample", float("inf")), -shown[r.attack]),
            default=None,
        )
        rows.append(
            {
                "attack": attack,
                "eps": f"{eps:g}",  # a label: the tables round floats to one decimal
                f"{ONE_STEP} labels shown": base,
                "points beating it": f"{len(beat)} of {len(pts)}",
                "best labels shown": shown[best.attack],
                "best point": _label(best, params),
                "cheapest point beating it": _label(cheapest, params) if cheapest else "none",
                "its labels shown": shown[cheapest.attack] if cheapest else float("nan"),
            }
        )
    if not rows:
        return None
    return pd.DataFrame(rows).set_index("attack")
