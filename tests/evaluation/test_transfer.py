"""``mlattack evaluate``: stored adversarial examples re-judged on another model, logged as a run linked to both."""

import json

import mlflow
import pytest
import torch

from mlattack.attacks import FGSM, PGD
from mlattack.cli import run as mlattack
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.evaluation.transfer import evaluate_transfer
from mlattack.rundir.examples import load_examples
from mlattack.scenarios import predicted_positive, scenario_success, scenario_thresholds
from mlattack.tracking.registry import log_network
from tests.evaluation.toy import ToyColours
from tests.report.toy_models import ShiftedColourNet


@pytest.fixture
def attack_run(tmp_path, store, toy_data, registered_toy_model):
    specs = [AttackSpec(attack=FGSM(eps=0.3)), AttackSpec(attack=PGD(eps=0.2, nb_iter=3, eps_iter=0.1))]
    return run_attacks(registered_toy_model, toy_data, specs, num_samples=8, batch_size=4, output_dir=str(tmp_path),
                       panel_samples=0, progress_bar=False, accelerator="cpu")  # fmt: skip


def register_shifted(store: str) -> str:
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("other"))
    return log_network(ShiftedColourNet(), run.info.run_id, store, "shiftedcolournet-toy", image_size=8)


def test_on_the_attacked_model_itself_the_numbers_are_the_attack_runs(
    tmp_path, store, attack_run, registered_toy_model
):
    out = evaluate_transfer(attack_run.parent_run_id, registered_toy_model, store, device="cpu")
    for name, values in attack_run.metrics.items():
        for k in range(8):
            key = f"success_rate_n{k}"
            assert out.metrics[name][key] == out.source_metrics[name][key] == pytest.approx(values[key])
        assert out.metrics[name]["labels_shown_mean"] == pytest.approx(values["labels_shown_mean"])
    # the baseline: the selected samples are predicted correctly, so their clean images show their true labels
    client = mlflow.MlflowClient(store)
    ex = load_examples(
        client.download_artifacts(attack_run.child_run_ids["FGSM"], "adversarial.npz", str(tmp_path))
    )
    assert out.clean_metrics["FGSM"]["labels_shown_mean"] == pytest.approx(ex.true.sum(1).mean())
    truth = torch.from_numpy(ex.true).sum(1)
    won = scenario_success(truth, scenario_thresholds(attack_run.avg_labels, 5)).double().mean(0)
    assert [out.clean_metrics["FGSM"][f"success_rate_n{k}"] for k in range(8)] == pytest.approx(won.tolist())


def test_transfer_to_another_model_equals_a_direct_judgement_and_links_both(tmp_path, store, attack_run):
    other = register_shifted(store)
    fgsm_run = attack_run.child_run_ids["FGSM"]
    out = evaluate_transfer(fgsm_run, other, store, device="cpu")  # one attack's run
    client = mlflow.MlflowClient(store)
    ex = load_examples(client.download_artifacts(fgsm_run, "adversarial.npz", str(tmp_path)))
    with torch.no_grad():
        shown = predicted_positive(ShiftedColourNet()(ex.images())).sum(1)
    direct = scenario_success(shown, scenario_thresholds(attack_run.avg_labels, 5)).double().mean(0)
    assert [out.metrics["FGSM"][f"success_rate_n{k}"] for k in range(8)] == pytest.approx(direct.tolist())
    assert out.metrics["FGSM"]["labels_shown_mean"] == pytest.approx(float(shown.double().mean()))
    assert list(out.metrics) == ["FGSM"]
    with torch.no_grad():
        clean_shown = predicted_positive(
            ShiftedColourNet()(torch.stack([ToyColours()[int(i)]["image"] for i in ex.indices]))
        ).sum(1)
    assert out.clean_metrics["FGSM"]["labels_shown_mean"] == pytest.approx(float(clean_shown.double().mean()))

    run = client.get_run(out.run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "mlattack-transfer"
    view = json.loads(exp.tags["mlflow.sharedViewState.compare-attacks"])  # the baseline beside labels shown
    assert "metrics.`clean/labels_shown`" in view["selectedColumns"]
    assert run.data.tags["mlattack.source_run"] == attack_run.parent_run_id
    assert (
        run.data.params["model_uri"] == other and run.data.params["source_model"] == "linearcolournet-toy/1"
    )
    inputs = {m.model_id for m in run.inputs.model_inputs}
    sources = {client.get_model_version(n, "1").source.removeprefix("models:/")
               for n in ("linearcolournet-toy", "shiftedcolournet-toy")}  # fmt: skip
    assert inputs == sources  # the transfer run is listed on both models' pages
    assert [(d.dataset.name, d.tags[0].value) for d in run.inputs.dataset_inputs] == [
        ("toy/test", "transfer")
    ]
    assert "Success rate (%) on the target model" in run.data.tags["mlflow.note.content"]
    (child,) = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{out.run_id}'")
    assert child.data.tags["mlattack.source_run"] == fgsm_run and child.data.params["attack.eps"] == "0.3"
    assert child.data.metrics["success/n0"] == out.metrics["FGSM"]["success_rate_n0"]
    assert child.data.metrics["source/success/n0"] == out.source_metrics["FGSM"]["success_rate_n0"]
    assert child.data.metrics["clean/labels_shown"] == out.clean_metrics["FGSM"]["labels_shown_mean"]
    assert f"| clean images (baseline) | {len(ex)} |" in run.data.tags["mlflow.note.content"]


def test_command_and_clear_errors(store, attack_run, registered_toy_model, capsys):
    report = mlattack(["evaluate", "--run", attack_run.parent_run_id, "--model", registered_toy_model,
                       "--tracking_uri", store, "--device", "cpu"])  # fmt: skip
    assert sorted(report.child_run_ids) == ["FGSM", "PGD"]
    assert "| FGSM |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no such run"):
        evaluate_transfer("0" * 32, registered_toy_model, store)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_transfer(attack_run.parent_run_id, registered_toy_model, store, batch_size=0)
