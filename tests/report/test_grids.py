"""Sensitivity grids: a sweep over several arguments runs one child per point and the report draws the grid."""

import mlflow
import pandas as pd
import pytest

from mlattack.attacks import BIM
from mlattack.data.datamodule import SOURCES, MultiLabelDataModule
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.evaluation.specs import AttackSpec as Spec
from mlattack.report.build import build_report
from tests.evaluation.toy import LinearColourNet
from tests.report.conftest import _register


def test_a_sweep_over_two_arguments_builds_their_product_through_the_constructor() -> None:
    built = Spec(
        attack=BIM(eps=0.1, nb_iter=2, eps_iter=0.05), sweep={"eps": [0.1, 0.2], "nb_iter": [1, 3]}
    ).build()
    assert [name for name, _, _ in built] == [
        "BIM[eps=0.1,nb_iter=1]",
        "BIM[eps=0.1,nb_iter=3]",
        "BIM[eps=0.2,nb_iter=1]",
        "BIM[eps=0.2,nb_iter=3]",
    ]
    _, attack, tags = built[3]
    assert (attack.eps, attack.nb_iter, attack.eps_iter) == (0.2, 3, 0.05)
    assert tags == {
        "mlattack.grid_base": "BIM",
        "mlattack.grid_params": "eps,nb_iter",
        "mlattack.grid.eps": "0.2",
        "mlattack.grid.nb_iter": "3",
    }
    with pytest.raises(ValueError, match=r"sweep.eps=0.1, sweep.nb_iter=0"):
        Spec(attack=BIM(eps=0.1, nb_iter=2, eps_iter=0.05), sweep={"eps": [0.1], "nb_iter": [0]}).build()
    # the study's config file swept over three arguments: its own values are one point of the grid
    grid = Spec(
        config="configs/attack/bim.yaml", sweep={"eps": [0.1, 0.3], "nb_iter": [30], "eps_iter": [0.001]}
    )
    assert [a.eps for _, a, _ in grid.build()] == [0.1, 0.3]


def test_report_draws_one_heatmap_per_grid_with_the_runs_success(tmp_path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setitem(SOURCES, "toy", ("tests.evaluation.toy", "ToyColours", False))
    model = _register(uri, LinearColourNet(), "linear-toy")
    data = MultiLabelDataModule(source="toy", image_size=8, batch_size=4, num_workers=0)
    spec = AttackSpec(
        attack=BIM(eps=0.1, nb_iter=2, eps_iter=0.05), sweep={"eps": [0.05, 0.3], "nb_iter": [1, 4]}
    )
    rep = run_attacks(
        model,
        data,
        [spec],
        num_samples=8,
        output_dir=str(tmp_path / "out"),
        progress_bar=False,
        accelerator="cpu",
        tracking_uri=uri,
    )
    assert len(rep.child_run_ids) == 4
    report = build_report(tmp_path / "report", tracking_uri=uri)
    stem = "grid_linearcolournet_toy_BIM_eps-nb_iter"
    table = pd.read_csv(report.output_dir / "tables" / f"{stem}.csv", index_col="point")
    assert sorted(table.index) == [
        "eps=0.05, nb_iter=1",
        "eps=0.05, nb_iter=4",
        "eps=0.3, nb_iter=1",
        "eps=0.3, nb_iter=4",
    ]
    assert "| eps=0.05, nb_iter=1 | 0.05 | 1 |" in report.markdown[stem]  # not rounded to "0.1 | 1.0"
    for name, metrics in rep.metrics.items():
        eps, nb_iter = (float(v.split("=")[1]) for v in name[4:-1].split(","))
        row = table[(table["eps"] == eps) & (table["nb_iter"] == nb_iter)]
        assert row["n=0"].item() == pytest.approx(100 * metrics["success_rate_n0"])
    assert (report.output_dir / "figures" / f"{stem}.png").stat().st_size > 10_000
    assert (
        mlflow.MlflowClient(uri)
        .get_run(rep.child_run_ids["BIM[eps=0.3,nb_iter=4]"])
        .data.tags["mlattack.grid.eps"]
        == "0.3"
    )
