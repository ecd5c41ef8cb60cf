"""The attack command's closing table shows every attack under its full name, and the mode in its title."""

from __future__ import annotations

from mlattack.cli.attack import print_report
from mlattack.evaluation.runner import AttackReport


def test_grid_point_names_keep_their_brackets(capsys) -> None:
    metrics = {f"success_rate_n{k}": 0.5 for k in range(8)}
    names = ["BIM[eps=0.1,nb_iter=10]", "BIM[eps=0.3,nb_iter=10]", "FGSM"]
    report = AttackReport(
        parent_run_id="abc",
        child_run_ids={n: str(i) for i, n in enumerate(names)},
        metrics={n: {**metrics, "num_samples": 4} for n in names},
        avg_labels=1.5,
        num_selected=4,
        table="",
        resumed=False,
        mode="fast mode, folded network",
    )
    print_report(report)
    out = capsys.readouterr().out
    assert "BIM[eps=0.1,nb_iter=10]" in out
    assert "BIM[eps=0.3,nb_iter=10]" in out
    assert "[15–85]" in out and "50" in out  # 2 of 4, with its 95 % Wilson interval under it
    assert "95 % Wilson" in out
    assert "fast mode, folded network" in out  # the title says how the numbers were made
