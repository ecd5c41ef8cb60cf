"""What a researcher sees in the MLflow UI, read back from a real SQLite store: each attack's own times, a compare
view that does not average across attacks, a parent whose description is a Markdown table with intervals, a fit
run with its training data as input and a model version with a signature, and a report run like the others."""

import json

import mlflow
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from mlattack.attacks import FGSM, PGD
from mlattack.cli import run as mlattack
from mlattack.intervals import format_rate
from mlattack.models.module import MultiLabelClassifier
from mlattack.tracking.callbacks import MLflowRunContext
from mlattack.tracking.logger import MLflowLogger
from mlattack.tracking.parent_run import parent_run_name
from mlattack.tracking.record import WRITER_TAG, compare_view_state
from mlattack.tracking.registry import RegisterBestModel, load_network
from tests.evaluation.toy import LinearColourNet
from tests.tracking.test_attack_record import attack

SPECS = [FGSM(eps=0.3), PGD(eps=0.2, nb_iter=20, eps_iter=0.05)]


@pytest.fixture
def attacked(tmp_path, store, toy_data, registered_toy_model):
    from mlattack.evaluation.runner import AttackSpec

    specs = [AttackSpec(attack=SPECS[0]), AttackSpec(attack=SPECS[1], name="PGD")]
    return attack(registered_toy_model, toy_data, tmp_path / "out", specs), specs


def _records(tmp_path, name):
    from mlattack.rundir.records import read_records

    (path,) = list((tmp_path / "out").glob(f"*/{name}.jsonl"))
    return read_records(path)[0]


def test_each_attack_run_spans_the_attacks_own_time(
    tmp_path, store, toy_data, registered_toy_model, attacked
):
    report, specs = attacked
    client = mlflow.MlflowClient(store)
    parent = client.get_run(report.parent_run_id).info
    for name, cid in report.child_run_ids.items():
        info = client.get_run(cid).info
        own = sum(r["seconds"] for r in _records(tmp_path, name))
        assert info.end_time - info.start_time == round(1000 * own)  # Duration = the attack's own time
        assert parent.start_time <= info.start_time <= info.end_time <= parent.end_time
    pgd, fgsm = (client.get_run(report.child_run_ids[n]).info for n in ("PGD", "FGSM"))
    assert pgd.end_time - pgd.start_time > fgsm.end_time - fgsm.start_time  # 20 steps take longer than one
    # every record says when its batch started; a run made again from the finished run's records starts then
    recs = _records(tmp_path, "FGSM")
    assert all(parent.start_time / 1000 <= r["started"] <= parent.end_time / 1000 for r in recs)
    again = attack(registered_toy_model, toy_data, tmp_path / "out", specs)
    assert again.parent_run_id != report.parent_run_id  # a new MLflow run, from the stored records
    redo = client.get_run(again.child_run_ids["FGSM"]).info
    assert redo.start_time == int(1000 * min(r["started"] for r in recs))
    assert redo.end_time - redo.start_time == round(1000 * sum(r["seconds"] for r in recs))


def test_parent_reads_in_the_ui(store, attacked):
    report, _ = attacked
    client = mlflow.MlflowClient(store)
    parent = client.get_run(report.parent_run_id)
    note = parent.data.tags["mlflow.note.content"]
    lines = note.split("\n")
    head = next(i for i, line in enumerate(lines) if line.startswith("| attack | &nbsp;&nbsp;N |"))
    assert lines[head - 1] == "" and lines[head + 1].startswith("|---|")  # a table showdown renders
    n = int(report.metrics["FGSM"]["num_samples"])
    k = round(report.metrics["FGSM"]["success_rate_n0"] * n)
    assert (
        f"| FGSM | &nbsp;&nbsp;{n} | &nbsp;&nbsp;{format_rate(k, n)} |" in note
    )  # cells apart, with intervals
    table = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/success_table.md")
    assert f"| FGSM | {n} | {format_rate(k, n)} |" in table  # the artifact stays plain Markdown
    for cid in report.child_run_ids.values():
        assert f"runs/{cid})" in note  # links to the attack runs
    assert parent.data.metrics["avg_labels"] == round(report.avg_labels, 4)
    assert WRITER_TAG not in parent.data.tags  # the PID/host of the writer is gone once it finished
    assert parent.info.run_name.count("toy") == 1  # registered as linearcolournet-toy: not repeated
    assert parent_run_name("ckpt", "voc2007", "T") == "attack-ckpt-voc2007-T"


def test_compare_view_shows_one_row_per_attack_and_no_averages(store, attacked):
    report, _ = attacked
    client = mlflow.MlflowClient(store)
    exp_id = client.get_run(report.parent_run_id).info.experiment_id
    view = json.loads(client.get_experiment(exp_id).tags["mlflow.sharedViewState.compare-attacks"])
    assert "groupBy" not in view  # no group row averaging eps over attacks of different norms
    order = view["columnOrder"]
    assert order[:3] == ["params.`attack.norm`", "params.`attack.eps`", "params.`attack.iterations`"]
    assert order[3:11] == [f"metrics.`success/n{k}`" for k in range(8)]
    assert (
        sum(view["columnWidths"][c] for c in order[:11]) + 190 + 150 + 80 <= 1600
    )  # name, created, duration
    # the filter and order are real MLflow search syntax that select exactly the attack runs
    found = client.search_runs([exp_id], view["searchFilter"], order_by=[view["orderByKey"]])
    assert sorted(r.info.run_id for r in found) == sorted(report.child_run_ids.values())
    assert (
        json.loads(compare_view_state("mlattack-transfer"))["selectedColumns"].count(
            "metrics.`clean/labels_shown`"
        )
        == 1
    )


def test_fit_run_has_its_training_data_and_the_version_a_signature(tmp_path, store, toy_data):
    logger = MLflowLogger(experiment_name="fit", tracking_uri=store, run_name="linear-toy-fit")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/mAP", mode="max")
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=logger, enable_progress_bar=False,
                         callbacks=[ckpt, MLflowRunContext(seed=7), RegisterBestModel()],
                         enable_model_summary=False)  # fmt: skip
    trainer.fit(MultiLabelClassifier(LinearColourNet()), datamodule=toy_data)
    client = mlflow.MlflowClient(store)
    (given,) = client.get_run(logger.run_id).inputs.dataset_inputs
    ds = given.dataset
    assert ds.name == "toy/train" and len(ds.digest) == 16 and ds.source_type == "code"
    assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == "train"
    specs = {c["name"]: c for c in json.loads(ds.schema)["mlflow_colspec"]}
    assert specs["image"]["tensor-spec"]["shape"] == [-1, 3, 8, 8]
    assert specs["target"]["tensor-spec"]["shape"] == [-1, toy_data.num_classes]
    info = mlflow.models.get_model_info("models:/linearcolournet-toy/1")  # the MLmodel the version page reads
    (inp,), (out,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (inp.name, inp.shape, str(inp.type)) == ("image", (-1, 3, 8, 8), "float32")
    assert (out.name, out.shape) == ("logits", (-1, toy_data.num_classes))
    net = load_network("models:/linearcolournet-toy/1", store)  # still the pickle-free network files
    assert net(torch.zeros(2, 3, 8, 8)).shape == (2, toy_data.num_classes)


def test_report_run_follows_the_other_runs_conventions(tmp_path, store, attacked):
    report, _ = attacked
    rep = mlattack(["report", "--tracking_uri", store, "--output_dir", str(tmp_path / "report")])
    client = mlflow.MlflowClient(store)
    run = client.get_run(rep.run_id)
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "mlattack report" and tags["mlflow.user"]
    assert len(tags["mlflow.source.git.commit"]) == 40 and "git.commit" not in tags
    assert tags["mlattack.kind"] == "report"
    exp = client.get_run(report.parent_run_id).info.experiment_id
    assert f"#/experiments/{exp}/runs/{report.parent_run_id})" in tags["mlflow.note.content"]
    assert (
        client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"]
        == "custom_model_development"
    )
