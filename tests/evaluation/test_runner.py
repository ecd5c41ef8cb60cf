"""`mlattack attack` end to end on a toy dataset and a registered linear model, in a real SQLite MLflow store."""

import json

import mlflow
import pytest
import torch
from pytorch_lightning.callbacks import Callback

from mlattack.attacks import BIM, FGSM, PGD
from mlattack.attacks.losses import labels_shown
from mlattack.evaluation.runner import AttackSpec, load_attack_config, run_attacks
from mlattack.rundir.records import read_records
from mlattack.scenarios import scenario_success, scenario_thresholds
from tests.evaluation.toy import LinearColourNet, ToyColours


def specs():
    return [
        AttackSpec(attack=FGSM(eps=0.3)),
        AttackSpec(attack=BIM(eps=0.2, nb_iter=5, eps_iter=0.05), num_samples=5),
        AttackSpec(attack=PGD(eps=0.2, nb_iter=5, eps_iter=0.05), name="PGD-small"),
    ]


def run(model, data, out, **kw):
    kw = {"batch_size": 4, "quantize": "none", **kw}
    return run_attacks(
        model,
        data,
        specs(),
        num_samples=8,
        output_dir=str(out),
        panel_samples=2,
        progress_bar=False,
        accelerator="cpu",
        **kw,
    )


class CrashAtBatch(Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == self.batch:
            raise RuntimeError("simulated crash")


def test_attack_run_logs_parent_children_metrics_and_artifacts(
    tmp_path, store, toy_data, registered_toy_model
):
    report = run(registered_toy_model, toy_data, tmp_path / "out")
    client = mlflow.MlflowClient(store)
    parent = client.get_run(report.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["dataset"] == "toy" and parent.data.params["num_selected"] == "8"
    assert parent.data.params["mode"] == "paper" and parent.data.params["precision"] == "32-true"
    assert float(parent.data.params["avg_labels"]) == pytest.approx(report.avg_labels, abs=1e-4)
    parent_files = [a.path for a in client.list_artifacts(report.parent_run_id)]
    assert "success_table.md" in parent_files and "selection.json" in parent_files
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{report.parent_run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["BIM", "FGSM", "PGD-small"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert "attack.eps" in child.data.params
        history = client.get_metric_history(child.info.run_id, "curve/success_vs_n")
        assert sorted(m.step for m in history) == list(range(8))
        for k in range(8):
            assert f"success/n{k}" in child.data.metrics
        assert {"samples.csv", "panel.png", "adversarial.npz", "attack.yaml"} <= {
            a.path for a in client.list_artifacts(child.info.run_id)
        }
    assert children[0].data.params["num_samples"] in ("8", "5")

    # the callback's numbers equal a direct computation on the same selected samples
    ds = ToyColours()
    sel = json.loads(open(client.download_artifacts(report.parent_run_id, "selection.json")).read())
    net = LinearColourNet()
    x = torch.stack([ds[i]["image"] for i in sel["indices"]])
    adv = FGSM(eps=0.3)(net, x, torch.ones(len(x), 5))
    with torch.no_grad():
        shown = labels_shown(net(adv))
    direct = scenario_success(shown, scenario_thresholds(report.avg_labels, 5)).float().mean(0)
    got = torch.tensor([report.metrics["FGSM"][f"success_rate_n{k}"] for k in range(8)])
    assert torch.allclose(direct.double(), got.double())
    assert report.metrics["FGSM"]["labels_shown_mean"] == pytest.approx(float(shown.float().mean()))
    # the clean-image baseline: the selected samples' own labels (their clean prediction), scored alike
    truth = torch.stack([ds[i]["target"] for i in sel["indices"]]).sum(1)
    clean = scenario_success(truth, scenario_thresholds(report.avg_labels, 5)).float().mean(0)
    got = torch.tensor([report.metrics["FGSM"][f"clean_success_rate_n{k}"] for k in range(8)])
    assert torch.allclose(clean.double(), got.double())
    assert report.metrics["FGSM"]["clean_labels_shown_mean"] == pytest.approx(float(truth.float().mean()))
    fgsm = next(c for c in children if c.info.run_name == "FGSM")
    assert fgsm.data.metrics["clean/success/n0"] == pytest.approx(float(clean[0]))
    assert "| no attack" in report.table.splitlines()[2]  # the table's first row
    assert report.metrics["BIM"]["num_samples"] == 5
    assert report.metrics["FGSM"]["linf_mean"] == pytest.approx(
        float((adv - x).abs().flatten(1).amax(1).mean()), abs=1e-6
    )


def test_interrupted_run_resumes_to_the_identical_table(tmp_path, store, toy_data, registered_toy_model):
    reference = run(registered_toy_model, toy_data, tmp_path / "ref", experiment="reference")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(registered_toy_model, toy_data, out, callbacks=[CrashAtBatch(1)])
    client = mlflow.MlflowClient(store)
    failed = client.search_runs(
        [client.get_experiment_by_name("mlattack-attacks").experiment_id],
        filter_string="tags.`mlflow.parentRunId` IS NULL",
    )
    assert [r.info.status for r in failed] == ["FAILED"]
    records = [json.loads(line) for line in next(out.rglob("FGSM.jsonl")).read_text().splitlines()]
    assert [r["position"] for r in records] == [0, 1, 2, 3]  # batch 0 persisted, batch 1 never ran
    with open(next(out.rglob("FGSM.jsonl")), "a") as f:
        f.write('{"position": 4, "index": 9, "labels_sh')  # a record torn by a kill -9 mid-write
    resumed = run(registered_toy_model, toy_data, out)
    assert resumed.resumed and resumed.parent_run_id == failed[0].info.run_id
    assert resumed.table == reference.table
    for name, values in reference.metrics.items():
        keys = ("success_rate_n0", "success_rate_n3", "labels_shown_mean", "l2_mean", "num_samples")
        for key in (*keys, "clean_success_rate_n0", "clean_labels_shown_mean"):
            assert resumed.metrics[name][key] == pytest.approx(values[key]), (name, key)
    positions = [r["position"] for r in read_records(next(out.rglob("FGSM.jsonl")))[0]]
    assert positions == list(range(8))  # no sample counted twice; the torn line is skipped, its sample redone
    assert client.get_run(resumed.parent_run_id).info.status == "FINISHED"


def test_bad_inputs_fail_clearly_and_leave_nothing_running(tmp_path, store, toy_data, registered_toy_model):
    with pytest.raises(ValueError, match="no such registered model"):
        run("models:/does-not-exist@best", toy_data, tmp_path)
    with pytest.raises(ValueError, match="num_samples"):
        run_attacks(registered_toy_model, toy_data, specs(), num_samples=0)
    with pytest.raises(ValueError, match="eps"):
        FGSM(eps=float("nan"))
    with pytest.raises(ValueError, match="(?s)pgd.yaml: invalid attack config.*'epsilon' is not accepted"):
        load_attack_config("configs/attack/pgd.yaml", {"epsilon": 0.1})
    from mlattack.data.datamodule import MultiLabelDataModule

    other = MultiLabelDataModule(
        source="synthetic", image_size=8, options={"num_classes": 7, "num_samples": 10}
    )
    with pytest.raises(ValueError, match="predicts 5 labels but data source 'synthetic' has 7"):
        run(registered_toy_model, other, tmp_path)
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("mlattack-attacks")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    assert all(r.info.status != "RUNNING" for r in runs)


def test_budget_sweep_logs_one_child_per_value(tmp_path, store, toy_data, registered_toy_model):
    sweep = [AttackSpec(config="configs/attack/fgsm.yaml", sweep={"eps": [0.05, 0.3]})]
    report = run_attacks(
        registered_toy_model,
        toy_data,
        sweep,
        num_samples=4,
        output_dir=str(tmp_path),
        progress_bar=False,
        accelerator="cpu",
        quantize="none",
    )
    assert list(report.metrics) == ["FGSM[eps=0.05]", "FGSM[eps=0.3]"]
    client = mlflow.MlflowClient(store)
    for name, value in (("FGSM[eps=0.05]", "0.05"), ("FGSM[eps=0.3]", "0.3")):
        run = client.get_run(report.child_run_ids[name])
        assert run.data.params["attack.eps"] == value
        assert (
            run.data.tags["mlattack.sweep_param"] == "eps" and run.data.tags["mlattack.sweep_value"] == value
        )
    assert report.metrics["FGSM[eps=0.05]"]["linf_mean"] == pytest.approx(0.05, abs=1e-6)
    assert report.metrics["FGSM[eps=0.3]"]["linf_mean"] == pytest.approx(0.3, abs=1e-6)


class SolverGivesUp(FGSM):
    """An attack whose inner solver fails on every batch (like an LP solver hitting numerical trouble)."""

    def perturb(self, model, images, target):
        raise RuntimeError("solver status: numerical difficulties")


def test_an_attack_error_fails_its_samples_with_a_reason_and_the_run_goes_on(
    tmp_path, store, toy_data, registered_toy_model
):
    specs_ = [AttackSpec(attack=SolverGivesUp(eps=0.1), name="Broken"), AttackSpec(attack=FGSM(eps=0.3))]
    report = run_attacks(
        registered_toy_model,
        toy_data,
        specs_,
        num_samples=6,
        output_dir=str(tmp_path),
        progress_bar=False,
        accelerator="cpu",
    )
    assert report.metrics["Broken"]["num_failed"] == 6 and report.metrics["Broken"]["success_rate_n0"] == 0
    assert report.metrics["FGSM"]["num_failed"] == 0
    records = read_records(next(tmp_path.rglob("Broken.jsonl")))[0]
    assert all("numerical difficulties" in r["failure"] and not r["valid"] for r in records)
    assert mlflow.MlflowClient(store).get_run(report.parent_run_id).info.status == "FINISHED"


def test_fast_mode_never_loses_a_success(tmp_path, store, toy_data, registered_toy_model):
    paper = run(registered_toy_model, toy_data, tmp_path / "paper", experiment="paper")
    fast = run(registered_toy_model, toy_data, tmp_path / "fast", experiment="fast", mode="fast")
    params = mlflow.MlflowClient(store).get_run(fast.parent_run_id).data.params
    assert params["mode"] == "fast" and params["fast_network"] == "exact"
    assert "fast_network" not in mlflow.MlflowClient(store).get_run(paper.parent_run_id).data.params
    shown = {
        mode: {
            r["position"]: r["labels_shown"]
            for r in read_records(next((tmp_path / mode).rglob("BIM.jsonl")))[0]
        }
        for mode in ("paper", "fast")
    }
    assert shown["fast"].keys() == shown["paper"].keys()
    assert all(
        shown["fast"][p] >= shown["paper"][p] for p in shown["paper"]
    )  # per sample, not only the table
    for name in ("BIM", "PGD-small"):
        for k in range(8):
            assert fast.metrics[name][f"success_rate_n{k}"] >= paper.metrics[name][f"success_rate_n{k}"]
        assert fast.metrics[name]["iterations_mean"] <= paper.metrics[name]["iterations_mean"]
    assert fast.metrics["FGSM"]["success_rate_n0"] == paper.metrics["FGSM"]["success_rate_n0"]


def test_fast_network_folded_is_its_own_run_with_the_same_successes(
    tmp_path, store, toy_data, registered_toy_model
):
    """``fast_network`` reaches the attack loop: a folded run is logged as such, is not resumed by an exact run with
    otherwise equal settings, and (the toy network has no BatchNorm) reaches the same successes."""
    exact = run(registered_toy_model, toy_data, tmp_path / "out", experiment="fn", mode="fast")
    folded = run(
        registered_toy_model, toy_data, tmp_path / "out", experiment="fn", mode="fast", fast_network="folded"
    )
    client = mlflow.MlflowClient(store)
    assert client.get_run(folded.parent_run_id).data.params["fast_network"] == "folded"
    assert (exact.mode, folded.mode) == ("fast mode, exact network", "fast mode, folded network")
    assert folded.parent_run_id != exact.parent_run_id and not folded.resumed
    for name in ("FGSM", "BIM", "PGD-small"):
        for k in range(8):
            assert folded.metrics[name][f"success_rate_n{k}"] == exact.metrics[name][f"success_rate_n{k}"]


def test_paper_mode_without_a_study_driver_judges_truncated_8_bit_images_and_says_why(
    tmp_path, store, toy_data, registered_toy_model
):
    """The toy data has no study driver: paper mode takes mlattack's stated choice, uint8(x * 255) / 255 (the study's
    ML-GCN VOC2007 driver's truncation) and >= 1 positive label, and the run records which rule chose."""
    report = run_attacks(
        registered_toy_model,
        toy_data,
        [AttackSpec(attack=FGSM(eps=0.3))],
        num_samples=8,
        output_dir=str(tmp_path),
        progress_bar=False,
        accelerator="cpu",
    )
    run_ = mlflow.MlflowClient(store).get_run(report.parent_run_id)
    assert run_.data.params["quantize"] == "floor" and run_.data.params["batch_size"] == "10"
    assert run_.data.params["min_positive"] == "1" and run_.data.params["driver"].startswith("none: ")
    ds = ToyColours()
    sel = json.loads(
        open(mlflow.MlflowClient(store).download_artifacts(report.parent_run_id, "selection.json")).read()
    )
    x = torch.stack([ds[i]["image"] for i in sel["indices"]])
    adv = FGSM(eps=0.3)(LinearColourNet(), x, torch.ones(len(x), 5))
    saved = torch.floor(adv * 255) / 255
    assert not torch.equal(saved, adv)  # the toy colours are not on the 8-bit grid: truncation changes them
    got = report.metrics["FGSM"]
    assert got["linf_mean"] == pytest.approx(float((saved - x).abs().flatten(1).amax(1).mean()), abs=1e-6)
    with torch.no_grad():
        shown = labels_shown(LinearColourNet()(saved))
    assert got["labels_shown_mean"] == pytest.approx(float(shown.float().mean()))
    # norms over the samples that succeeded in scenario n (the study's average) next to the all-sample one
    won = scenario_success(shown, scenario_thresholds(report.avg_labels, 5))
    l2 = (saved - x).flatten(1).norm(dim=1)
    for n in range(8):
        key = f"l2_mean_success_n{n}"
        if won[:, n].any():
            assert got[key] == pytest.approx(float(l2[won[:, n]].mean()), abs=1e-6)
        else:
            assert key not in got
