"""Numerical faults: samples whose logits or input gradients turn NaN are marked failed with a reason and counted,
and the run finishes (toy dataset, registered faulty models, real SQLite store)."""

import csv
import io
import json
import shutil

import mlflow
import pytest
import torch

from mlattack.attacks import BIM, FGSM, MLDP
from mlattack.data.datamodule import SOURCES, MultiLabelDataModule
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.scenarios import scenario_thresholds
from mlattack.tracking.registry import log_network
from tests.reliability.faulty import NaNGradientBelow, NaNLogitsAbove
from tests.reliability.helpers import keep_tracking_uri

CASES = {
    # model, the reason its failed samples must give
    "nan-logits": (NaNLogitsAbove, "non-finite logits"),
    "nan-gradient": (NaNGradientBelow, "non-finite input gradient of the attack loss"),
}


@pytest.fixture
def toy_data(monkeypatch):
    monkeypatch.setitem(SOURCES, "toy", ("tests.evaluation.toy", "ToyColours", False))
    return MultiLabelDataModule(source="toy", image_size=8, batch_size=4, num_workers=0)


@pytest.fixture(scope="module")
def faulty_models(tmp_path_factory, store_template):
    """Both faulty models registered in one store (registering is the slow part)."""
    folder = tmp_path_factory.mktemp("faulty")
    shutil.copy(store_template, folder / "mlflow.db")
    store = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("models"))
    with keep_tracking_uri():
        uris = {
            case: log_network(cls(), run.info.run_id, store, f"faulty-{case}", image_size=8)
            for case, (cls, _) in CASES.items()
        }
    return store, uris


@pytest.mark.parametrize("case", sorted(CASES))
def test_non_finite_samples_are_failed_with_a_reason_and_the_run_finishes(
    tmp_path, toy_data, faulty_models, case
):
    reason = CASES[case][1]
    store, uris = faulty_models
    client = mlflow.MlflowClient(store)
    uri = uris[case]
    attacks = [
        AttackSpec(attack=FGSM(eps=0.3)),
        AttackSpec(attack=BIM(eps=0.3, nb_iter=4, eps_iter=0.1)),
        AttackSpec(attack=MLDP(max_iter=4)),
    ]
    report = run_attacks(
        uri,
        toy_data,
        attacks,
        num_samples=12,
        output_dir=str(tmp_path / "out"),
        progress_bar=False,
        accelerator="cpu",
        tracking_uri=store,
        panel_samples=0,
        experiment=f"attacks-{case}",
    )

    assert client.get_run(report.parent_run_id).info.status == "FINISHED"
    failed_total = 0
    for name, run_id in report.child_run_ids.items():
        assert client.get_run(run_id).info.status == "FINISHED"
        records = [json.loads(line) for line in next((tmp_path / "out").rglob(f"{name}.jsonl")).open()]
        assert len(records) == report.num_selected
        failed = [r for r in records if not r["valid"]]
        assert all(reason in r["failure"] for r in failed), {r["failure"] for r in failed}
        assert all(r["failure"] == "" for r in records if r["valid"])
        m = report.metrics[name]
        assert m["num_failed"] == len(failed) and m["num_samples"] == len(records)
        # a failed sample never counts as a success; the others count as usual
        thresholds = scenario_thresholds(report.avg_labels, 5)
        for k in (0, 2):
            wins = sum(r["valid"] and r["labels_shown"] >= int(thresholds[k]) for r in records)
            assert m[f"success_rate_n{k}"] == pytest.approx(wins / len(records))
        # the per-sample table in MLflow carries the same verdicts
        rows = list(
            csv.DictReader(
                io.StringIO(
                    mlflow.artifacts.load_text(f"{client.get_run(run_id).info.artifact_uri}/samples.csv")
                )
            )
        )
        assert [(int(r["position"]), r["failure"]) for r in rows] == [
            (r["position"], r["failure"]) for r in records
        ]
        failed_total += len(failed)
    # the faulty region is reached by some samples and not by others (otherwise the test would prove little)
    assert 0 < failed_total < len(report.child_run_ids) * report.num_selected


def test_faulty_models_fail_where_they_should():
    """The fixtures themselves: NaN logits above a pixel value; NaN input gradient (finite logits) below a red mean."""
    x = torch.full((2, 3, 4, 4), 0.3)
    x[1, 0] = 0.95
    with torch.no_grad():
        logits = NaNLogitsAbove()(x)
    assert torch.isfinite(logits[0]).all() and torch.isnan(logits[1]).all()
    x.requires_grad_(True)
    out = NaNGradientBelow()(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(out).all()
    assert torch.isnan(grad[0]).any() and torch.isfinite(grad[1]).all()
