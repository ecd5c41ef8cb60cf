"""The robustness section's table on constructed runs: one cell per attack as the runs name it."""

import math

import matplotlib.pyplot as plt
import pandas as pd

from mlattack.report.collect import AttackRun
from mlattack.report.robustness import column, frontier_figure, wide_tables


def run(attack: str, eps: float | None) -> AttackRun:
    params = {} if eps is None else {"attack.eps": str(eps)}
    return AttackRun(run_id=attack, parent_id="p", attack=attack, network="mlgcn", dataset="synthetic",
                     model_uri="models:/mlgcn-synthetic/1", start_time=0, avg_labels=1.9, num_samples=100,
                     num_classes=20, metrics={}, params=params)  # fmt: skip


def test_two_attacks_of_one_family_at_one_budget_keep_their_own_cells():
    """ML-APGD with 10 and with 30 iterations (or another loss) at eps 0.03 are two attacks: the table once put both
    in the column "APGD ε=0.03" and showed whichever came first."""
    runs = [run("APGD[eps=0.03]", 0.03), run("APGD-30it-margin[eps=0.03]", 0.03), run("MLCW-reduced", None)]
    cols = [column(r) for r in runs]
    assert cols == ["APGD ε=0.03", "APGD-30it-margin ε=0.03", "MLCW-reduced"]
    long = pd.DataFrame([{"victim": "mlgcn", "column": c, "labels shown": shown, "low": math.nan, "high": math.nan,
                          "all shown": 0, "N": 100} for c, shown in zip(cols, (2.0, 3.0, 12.0), strict=True)])  # fmt: skip
    clean = pd.DataFrame({"clean val mAP": [0.94]}, index=pd.Index(["mlgcn"], name="victim"))
    shown, _ = wide_tables(long, clean)
    assert shown.loc["mlgcn", "APGD ε=0.03"] == "2.00"
    assert shown.loc["mlgcn", "APGD-30it-margin ε=0.03"] == "3.00"
    assert list(shown.columns)[2:] == cols  # family order (APGD, PGD, ML-CW), then the budget


def test_the_frontier_names_the_attack_where_a_victim_has_two_in_one_panel(tmp_path, monkeypatch):
    rows = [
        ("mlgcn", "APGD ε=0.03", 2.0),
        ("mlgcn", "APGD-30it-margin ε=0.03", 3.0),
        ("mlgcn-at", "APGD ε=0.03", 1.8),
    ]
    long = pd.DataFrame([{"victim": v, "column": c, "family": "APGD", "eps": 0.03, "labels shown": x, "low": x - 0.2,
                          "high": x + 0.2} for v, c, x in rows])  # fmt: skip
    clean = pd.DataFrame(
        {"clean val mAP": [0.94, 0.86]}, index=pd.Index(["mlgcn", "mlgcn-at"], name="victim")
    )
    seen = []
    monkeypatch.setattr(plt.Figure, "legend", lambda self, handles, labels, **kw: seen.extend(labels))
    assert frontier_figure(long, clean, tmp_path / "frontier.png").is_file()
    assert seen == ["mlgcn: APGD ε=0.03", "mlgcn: APGD-30it-margin ε=0.03", "mlgcn-at"]
