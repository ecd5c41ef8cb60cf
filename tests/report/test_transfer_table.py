"""The report's transferability table, from real `mlattack evaluate` runs in a SQLite store."""

import mlflow
import pandas as pd
import pytest

from mlattack.attacks import BIM, FGSM
from mlattack.data.datamodule import SOURCES, MultiLabelDataModule
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.evaluation.transfer import evaluate_transfer
from mlattack.report.build import build_report
from mlattack.report.collect import collect_runs
from mlattack.report.tables import SCENARIO_COLUMNS
from mlattack.report.transfers import BASELINE_ROW, TransferRun, collect_transfers, transfer_table
from mlattack.tracking.registry import log_network
from tests.evaluation.toy import LinearColourNet
from tests.report.toy_models import ShiftedColourNet


@pytest.fixture(scope="module")
def transfers(tmp_path_factory):
    """An attack run on the linear toy model (FGSM on 8 samples, BIM on 5) evaluated on the shifted model twice
    (the second evaluation must win), and the report built from the store."""
    tmp = tmp_path_factory.mktemp("transfer-store")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setitem(SOURCES, "toy", ("tests.evaluation.toy", "ToyColours", False))
        client = mlflow.MlflowClient(uri)
        exp = client.create_experiment("models")
        models = {}
        for net, name in ((LinearColourNet(), "linear-toy"), (ShiftedColourNet(), "shifted-toy")):
            run = client.create_run(exp)
            models[name] = log_network(net, run.info.run_id, uri, name, image_size=8)
            client.set_terminated(run.info.run_id)
        data = MultiLabelDataModule(source="toy", image_size=8, batch_size=4, num_workers=0)
        specs = [AttackSpec(attack=FGSM(eps=0.3)), AttackSpec(attack=BIM(eps=0.2, nb_iter=3, eps_iter=0.1), num_samples=5)]  # fmt: skip
        attack = run_attacks(models["linear-toy"], data, specs, num_samples=8, output_dir=str(tmp / "out"),
                             panel_samples=0, progress_bar=False, accelerator="cpu", tracking_uri=uri)  # fmt: skip
        evaluate_transfer(attack.parent_run_id, models["shifted-toy"], uri, device="cpu")
        shifted = evaluate_transfer(attack.parent_run_id, models["shifted-toy"], uri, device="cpu")
        report = build_report(tmp / "report", tracking_uri=uri)
        yield uri, shifted, report


def test_report_shows_each_pair_with_its_clean_baseline_first(transfers):
    uri, shifted, report = transfers
    table = pd.read_csv(report.output_dir / "tables" / "transfer_toy.csv", index_col=0)
    pair = "linear-toy/1 → shifted-toy/1"
    assert set(table.index) == {pair}
    rows = table.loc[pair].set_index("attack")
    assert list(rows.index) == [BASELINE_ROW, "FGSM", "BIM"]  # once: the newer evaluation replaced the older
    for attack_name in ("FGSM", "BIM"):
        want, got = shifted.metrics[attack_name], rows.loc[attack_name]
        assert [got[c] for c in SCENARIO_COLUMNS] == pytest.approx(
            [100 * want[f"success_rate_n{k}"] for k in range(8)]
        )
        assert got["labels shown"] == pytest.approx(want["labels_shown_mean"])
        assert got["N"] == want["num_samples"]
    # the baseline: the target model on the clean images of the attack with the most samples (FGSM: 8)
    base, clean = rows.loc[BASELINE_ROW], shifted.clean_metrics["FGSM"]
    assert base["N"] == 8 and base["labels shown"] == pytest.approx(clean["labels_shown_mean"])
    assert [base[c] for c in SCENARIO_COLUMNS] == pytest.approx(
        [100 * clean[f"success_rate_n{k}"] for k in range(8)]
    )

    index = (report.output_dir / "index.md").read_text()
    assert "## Transferability: toy" in index and f"| {pair} | {BASELINE_ROW} |" in index
    assert "no clean-image baseline" not in index and "transfer_toy" in report.markdown


def test_only_transfers_of_the_reported_attack_runs_are_collected(transfers):
    uri, shifted, _ = transfers
    client = mlflow.MlflowClient(uri)
    fgsm_only = [r for r in collect_runs(client) if r.attack == "FGSM"]
    got = [(t.attack, t.target, t.run_id) for t in collect_transfers(client, fgsm_only)]
    assert got == [("FGSM", "shifted-toy/1", shifted.child_run_ids["FGSM"])]
    assert collect_transfers(client, []) == []


def test_pairs_are_grouped_and_runs_logged_before_the_baseline_show_none():
    def run(attack: str, target: str, clean: dict) -> TransferRun:
        metrics = {"success_rate_n0": 0.5, "num_samples": 4.0}
        return TransferRun("r", "s", attack, "toy", "a/1", target, 0, metrics, clean)

    runs = [run("PGD", "b/1", {}), run("FGSM", "c/1", {"labels_shown_mean": 2.0}), run("FGSM", "b/1", {})]
    table = transfer_table(runs)
    assert list(table.index) == ["a/1 → b/1", "a/1 → b/1", "a/1 → c/1", "a/1 → c/1"]
    assert list(table["attack"]) == [
        "FGSM",
        "PGD",
        BASELINE_ROW,
        "FGSM",
    ]  # baseline first, then the study's order
    assert table.iloc[0]["n=0"] == 50.0 and table.iloc[2]["labels shown"] == 2.0 and table.iloc[2]["N"] == 4
