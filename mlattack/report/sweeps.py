"""Success-vs-budget curves from budget sweeps (``sweep: {eps: [...]}`` in ``mlattack attack``).

The runner tags each sweep child with ``mlattack.sweep_base`` / ``sweep_param`` / ``sweep_value``; one curve is one
(network, dataset, base attack, swept argument) with one point per value, and one line per scenario n.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mlattack.report.collect import AttackRun
from mlattack.report.tables import SCENARIO_COLUMNS, add_intervals


@dataclass
class BudgetCurve:
    network: str
    dataset: str
    attack: str
    param: str
    table: pd.DataFrame  # index: budget value (ascending); n=0..7 in percent with their bounds, N and run_id

    @property
    def stem(self) -> str:
        return f"budget_{self.network}_{self.dataset}_{self.attack}_{self.param}"


def budget_curves(runs: list[AttackRun]) -> list[BudgetCurve]:
    """One curve per swept (network, dataset, attack, argument); values sorted ascending, latest run per value."""
    points: dict[tuple[str, str, str, str], dict[float, AttackRun]] = {}
    for r in sorted(runs, key=lambda r: r.start_time):
        if r.sweep is None:
            continue
        base, param, value = r.sweep
        points.setdefault((r.network, r.dataset, base, param), {})[value] = r
    curves = []
    for (network, dataset, base, param), by_value in sorted(points.items()):
        rows = {
            v: {
                **{c: 100.0 * s for c, s in zip(SCENARIO_COLUMNS, r.success, strict=True)},
                "N": r.num_samples,
                "run_id": r.run_id,
            }
            for v, r in sorted(by_value.items())
        }
        table = pd.DataFrame.from_dict(rows, orient="index", columns=[*SCENARIO_COLUMNS, "N", "run_id"])
        table.index.name = param
        table = add_intervals(table, dict.fromkeys(SCENARIO_COLUMNS, "N"))
        curves.append(BudgetCurve(network, dataset, base, param, table))
    return curves
