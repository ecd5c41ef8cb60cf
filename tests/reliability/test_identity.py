"""Identity by content: results belong to the model's weights (and the data's content), not to a name/version, and
``--run_id`` can only resume a run of the same model, data and settings."""

from __future__ import annotations

import mlflow
import pytest
import torch

from mlattack.attacks import FGSM
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.tracking.registry import log_network, weights_digest
from tests.evaluation.toy import LinearColourNet
from tests.reliability.helpers import keep_tracking_uri

NAME = "linearcolournet-toy"


def other_net() -> LinearColourNet:
    """The toy model with other biases: it selects other samples and shows other labels."""
    net = LinearColourNet()
    with torch.no_grad():
        net.linear.bias.mul_(0.7)
    return net


def register(store: str, net, name: str = NAME) -> str:
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("models") or client.create_experiment("models")
    run = client.create_run(exp if isinstance(exp, str) else exp.experiment_id)
    with keep_tracking_uri():
        return log_network(net, run.info.run_id, store, name, image_size=8)


def attack(model, data, out, eps=0.3, **kw):
    return run_attacks(model, data, [AttackSpec(attack=FGSM(eps=eps))], num_samples=8, output_dir=str(out),
                       progress_bar=False, accelerator="cpu", quantize="none", batch_size=4, panel_samples=0, **kw)  # fmt: skip


@pytest.fixture
def toy_data(toy_source):
    from mlattack.data.datamodule import MultiLabelDataModule

    return MultiLabelDataModule(source=toy_source, image_size=8, batch_size=4, num_workers=0)


def test_the_same_name_and_version_with_other_weights_is_attacked_anew(tmp_path, fresh_store, toy_data,
                                                                      monkeypatch):  # fmt: skip
    first, second = fresh_store(tmp_path / "a"), fresh_store(tmp_path / "b")
    assert register(first, LinearColourNet()) == register(second, other_net()) == f"models:/{NAME}/1"
    out = tmp_path / "out"  # one output folder for both, as a user re-running the same command would have
    a = attack(f"models:/{NAME}/1", toy_data, out, tracking_uri=first)
    b = attack(f"models:/{NAME}/1", toy_data, out, tracking_uri=second)
    fresh = attack(f"models:/{NAME}/1", toy_data, tmp_path / "fresh", tracking_uri=second, experiment="fresh")
    assert b.table == fresh.table and b.table != a.table  # the second model's own results, not the first's
    digests = [mlflow.MlflowClient(s).get_run(r.parent_run_id).data.params["model_digest"]
               for s, r in ((first, a), (second, b))]  # fmt: skip
    assert digests == [weights_digest(LinearColourNet()), weights_digest(other_net())]
    assert len([p for p in out.iterdir() if p.name != "selections"]) == 2  # two runs, two record folders
    assert len(list((out / "selections").iterdir())) == 2

    # a name deleted and registered again (version 1 again, other weights) in one store: a new run too
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)
    mlflow.MlflowClient(first).delete_registered_model(NAME)
    assert register(first, other_net()) == f"models:/{NAME}/1"
    again = attack(f"models:/{NAME}/1", toy_data, out, tracking_uri=first)
    assert again.parent_run_id != a.parent_run_id and again.table == fresh.table


def test_run_id_must_name_a_run_of_the_same_settings(tmp_path, store, toy_data, registered_toy_model):
    finished = attack(registered_toy_model, toy_data, tmp_path, eps=0.1)
    client = mlflow.MlflowClient(store)
    key = client.get_run(finished.parent_run_id).data.tags["mlattack.run_key"]
    with pytest.raises(ValueError, match=rf"--run_id {finished.parent_run_id} holds an attack run with run key "
                                         rf"{key}, but .* give run key [0-9a-f]{{16}}"):  # fmt: skip
        attack(registered_toy_model, toy_data, tmp_path, eps=0.002, run_id=finished.parent_run_id)
    parents = client.search_runs([client.get_experiment_by_name("mlattack-attacks").experiment_id],
                                 filter_string="tags.`mlflow.parentRunId` IS NULL")  # fmt: skip
    assert [r.info.run_id for r in parents] == [finished.parent_run_id]  # nothing started, nothing changed
    assert parents[0].info.status == "FINISHED"
    child = finished.child_run_ids["FGSM"]
    assert client.get_run(child).data.params["attack.eps"] == "0.1"
    with pytest.raises(ValueError, match="--run_id 0123abc: no such run"):
        attack(registered_toy_model, toy_data, tmp_path, eps=0.1, run_id="0123abc")
    with pytest.raises(ValueError, match="give the parent run's id"):
        attack(registered_toy_model, toy_data, tmp_path, eps=0.1, run_id=child)
    # the same settings: it resumes that run (nothing left to attack) and logs nothing twice
    same = attack(registered_toy_model, toy_data, tmp_path, eps=0.1, run_id=finished.parent_run_id)
    assert same.parent_run_id == finished.parent_run_id and same.table == finished.table
    assert sorted(m.step for m in client.get_metric_history(child, "curve/success_vs_n")) == list(range(8))
    assert len(client.get_metric_history(finished.parent_run_id, "avg_labels")) == 1
