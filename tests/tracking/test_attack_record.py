"""What an attack run leaves in MLflow, read back as a researcher would: lineage, names, params = settings that ran,
descriptions, and every adversarial example."""

import json

import mlflow
import pytest
import torch
import yaml
from pytorch_lightning.callbacks import Callback

from mlattack.attacks import FGSM, PGD
from mlattack.attacks.losses import labels_shown
from mlattack.evaluation.runner import AttackSpec, load_attack_config, run_attacks
from mlattack.rundir.examples import as_float, compact_clean, load_examples
from mlattack.rundir.records import read_records
from tests.evaluation.toy import LinearColourNet, ToyColours

CONTEXT = ("dataset", "split", "image_size", "num_classes", "seed", "device", "mode", "quantize", "precision",
           "batch_size", "model_uri", "model_identity", "model_digest", "model_fit_run_id", "network", "avg_labels")  # fmt: skip


def attack(model, data, out, specs, **kw):
    return run_attacks(model, data, specs, num_samples=6, batch_size=4, output_dir=str(out), panel_samples=2,
                       progress_bar=False, accelerator="cpu", **kw)  # fmt: skip


def test_every_run_carries_lineage_context_and_readable_names(
    tmp_path, store, toy_data, registered_toy_model
):
    report = attack(registered_toy_model, toy_data, tmp_path, [AttackSpec(attack=FGSM(eps=0.3)),
                    AttackSpec(attack=PGD(eps=0.2, nb_iter=3, eps_iter=0.1), name="PGD")])  # fmt: skip
    client = mlflow.MlflowClient(store)
    parent = client.get_run(report.parent_run_id)
    version = client.get_model_version("linearcolournet-toy", "1")
    model_id = version.source.removeprefix("models:/")
    exp = client.get_experiment(parent.info.experiment_id)
    assert "success/n0" in exp.tags["mlflow.note.content"]  # the experiment explains its metric names
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI shows a runs table
    view = json.loads(exp.tags["mlflow.sharedViewState.compare-attacks"])  # linked from the description
    assert (
        "metrics.`success/n0`" in view["selectedColumns"]
        and "viewStateShareKey=compare-attacks" in exp.tags["mlflow.note.content"]
    )
    # one row per attack, each model's together (no group rows: tests/tracking/test_ui_record.py)
    assert view["orderByKey"] == "params.`model_identity`"
    # the model's page lists the attack runs: their headline metrics are linked to its logged model
    linked = {(m.run_id, m.key) for m in client.get_logged_model(model_id).metrics}
    assert {(c, "success/n0") for c in report.child_run_ids.values()} <= linked
    fit_exp = client.get_run(
        version.run_id
    ).info.experiment_id  # and the version's description links that page
    assert f"](#/experiments/{fit_exp}/models/{model_id})" in version.description
    for run in (parent, *(client.get_run(c) for c in report.child_run_ids.values())):
        tags, params = run.data.tags, run.data.params
        assert tags["mlflow.source.name"] == "mlattack attack" and tags["mlflow.user"]
        assert len(tags["mlflow.source.git.commit"]) == 40 and "git.commit" not in tags
        assert all(k in params for k in CONTEXT), sorted(set(CONTEXT) - set(params))
        assert params["model_fit_run_id"] == version.run_id and params["split"] == "test"
        assert [m.model_id for m in run.inputs.model_inputs] == [model_id]  # the model lists this run
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["toy/test"]
    # the parent's description is the success table, with a link to the model version and its fit run
    note = parent.data.tags["mlflow.note.content"]
    assert (
        "| attack | &nbsp;&nbsp;N | &nbsp;&nbsp;n=0 |" in note
        and "#/models/linearcolournet-toy/versions/1" in note
    )
    assert f"runs/{version.run_id}" in note
    fgsm = client.get_run(report.child_run_ids["FGSM"])
    m = fgsm.data.metrics
    assert m["success/n0"] == report.metrics["FGSM"]["success_rate_n0"] and "success_rate_n0" not in m
    assert m["labels_shown"] == report.metrics["FGSM"]["labels_shown_mean"]
    assert m["time/attack_seconds"] == pytest.approx(6 * report.metrics["FGSM"]["seconds_per_sample"])
    assert m["n_at_50pct"] in range(-1, 8) and "norm/linf" in m
    assert fgsm.data.params["attack.norm"] == "linf"
    assert client.get_run(report.child_run_ids["PGD"]).data.params["attack.iterations"] == "3"
    assert "FGSM" in fgsm.data.tags["mlflow.note.content"]


def test_logged_params_and_attack_yaml_are_the_settings_that_ran(
    tmp_path, store, toy_data, registered_toy_model
):
    spec = AttackSpec(attack=FGSM(eps=0.3))
    report = attack(registered_toy_model, toy_data, tmp_path, [spec], mode="fast")
    assert spec.attack.early_stop is False  # the caller's attack is not changed; a copy ran
    client = mlflow.MlflowClient(store)
    child = report.child_run_ids["FGSM"]
    assert client.get_run(child).data.params["attack.early_stop"] == "True"  # fast mode's per-sample stop
    path = tmp_path / "attack.yaml"
    path.write_text(open(client.download_artifacts(child, "attack.yaml")).read())
    ran = load_attack_config(str(path))
    assert ran.early_stop is True and ran.hyperparameters()["eps"] == 0.3
    assert yaml.safe_load(path.read_text())["class_path"] == "mlattack.attacks.fgsm.FGSM"


def test_every_adversarial_example_is_stored_compactly_and_exactly(
    tmp_path, store, toy_data, registered_toy_model
):
    report = attack(
        registered_toy_model, toy_data, tmp_path, [AttackSpec(attack=FGSM(eps=0.3))]
    )  # paper: floor
    client = mlflow.MlflowClient(store)
    child = report.child_run_ids["FGSM"]
    ex = load_examples(client.download_artifacts(child, "adversarial.npz", str(tmp_path)))
    assert len(ex) == 6 and ex.adv.dtype.name == "uint8" and ex.class_names == [f"c{j}" for j in range(5)]
    sel = json.loads(open(client.download_artifacts(report.parent_run_id, "selection.json")).read())
    assert list(ex.indices) == sel["indices"][:6] and ex.sample_ids == sel["ids"][:6]
    ds, net = ToyColours(), LinearColourNet()
    x = torch.stack([ds[i]["image"] for i in ex.indices])
    expected = (
        torch.floor(FGSM(eps=0.3)(net, x, torch.ones(len(x), 5)) * 255) / 255
    )  # the study's 8-bit files
    assert torch.equal(ex.images(), expected)
    # the clean images (the transfer baseline judges them): these are off the 8-bit grid, so float16
    assert ex.clean.dtype.name == "float16" and torch.allclose(ex.clean_images(), x, atol=5e-4, rtol=0)
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(ex.shown).sum(1), labels_shown(net(ex.images())))
    assert torch.equal(torch.from_numpy(ex.true).float(), ds.targets[torch.from_numpy(ex.indices)])


def test_clean_images_on_the_8bit_grid_are_kept_exactly_as_uint8():
    decoded = torch.randint(0, 256, (3, 4, 4)).float() / 255  # what an image file decodes to
    assert compact_clean(decoded).dtype.name == "uint8" and torch.equal(
        as_float(compact_clean(decoded)), decoded
    )
    assert compact_clean(decoded + 1e-3).dtype.name == "float16"


class CrashAtBatch(Callback):
    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 1:
            raise RuntimeError("simulated crash")


def test_samples_whose_images_a_crash_lost_are_attacked_again_for_them_only(
    tmp_path, store, toy_data, registered_toy_model
):
    spec = [AttackSpec(attack=FGSM(eps=0.3))]
    ref = attack(registered_toy_model, toy_data, tmp_path / "ref", spec, experiment="reference")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        attack(registered_toy_model, toy_data, out, spec, callbacks=[CrashAtBatch()])
    (chunk,) = out.rglob("FGSM.examples.*.npz")
    chunk.unlink()  # killed after the first batch's records were written, before its images were
    resumed = attack(registered_toy_model, toy_data, out, spec)
    assert resumed.resumed
    positions = [r["position"] for r in read_records(next(out.rglob("FGSM.jsonl")))[0]]
    assert positions == list(range(6))  # no sample recorded twice
    client = mlflow.MlflowClient(store)
    got, want = (load_examples(client.download_artifacts(r.child_run_ids["FGSM"], "adversarial.npz",
                                                         str(tmp_path / name)))
                 for r, name in ((resumed, "a"), (ref, "b")))  # fmt: skip
    assert list(got.positions) == list(range(6)) and (got.adv == want.adv).all()
    for k in ("success_rate_n0", "success_rate_n2", "labels_shown_mean", "l2_mean", "num_samples"):
        assert resumed.metrics["FGSM"][k] == pytest.approx(ref.metrics["FGSM"][k])
