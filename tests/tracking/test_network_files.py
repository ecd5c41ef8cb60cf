"""Registered networks are stored without pickle and loaded by code that a tampered registry cannot make run code."""

import json
import os
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from mlattack.tracking import network_files
from mlattack.tracking.network_files import UntrustedNetwork
from mlattack.tracking.registry import ALLOW_PICKLE_ENV, load_network, log_network
from mlattack.tracking.store import tracking_uri_set_to
from tests.evaluation.toy import LinearColourNet

MARKER = "mlattack-test-payload-ran"


class Payload:
    """Unpickling this runs ``open(MARKER, "w")``: evidence that code from the file ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def logged_model_dir(client: mlflow.MlflowClient, uri: str, tmp_path) -> str:
    name, version = uri[len("models:/") :].split("/")
    source = client.get_model_version(name, version).source
    with tracking_uri_set_to(client.tracking_uri):  # a logged model's URI resolves through the global URI
        return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path / "dl"))


def test_registered_network_is_a_named_logged_model_without_pickle(tmp_path, store):
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("fit"))
    net = LinearColourNet()
    uri = log_network(net, run.info.run_id, store, "linearcolournet-toy", image_size=8, score=0.7,
                      dataset="toy", class_names=[f"c{j}" for j in range(5)], epoch=3)  # fmt: skip
    mv = client.get_model_version("linearcolournet-toy", "1")
    assert mv.tags["mlattack.val_mAP"] == "0.7" and mv.tags["mlattack.epoch"] == "3"
    assert json.loads(mv.tags["mlattack.class_names"]) == ["c0", "c1", "c2", "c3", "c4"]
    assert "validation mAP 0.7000" in mv.description and mv.tags["mlattack.image_size"] == "8"
    assert (
        "mlattack attack --model models:/linearcolournet-toy@best"
        in client.get_registered_model("linearcolournet-toy").description
    )
    logged = client.get_logged_model(mv.source.removeprefix("models:/"))
    assert logged.name == "linearcolournet-toy" and logged.source_run_id == run.info.run_id
    folder = logged_model_dir(client, uri, tmp_path)
    files = sorted(os.listdir(folder))
    # the weights and their JSON config; MLmodel only for the signature (no pickled module, no pyfunc flavor)
    assert [f for f in files if not f.startswith(("MLmodel", "registered_model_meta"))] == [
        "network.json",
        "network.pt",
    ]
    mlmodel = yaml.safe_load((Path(folder) / "MLmodel").read_text())
    assert set(mlmodel["flavors"]) == {"mlattack"} and "signature" in mlmodel
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_network(uri, store)(x), net(x))
        assert torch.equal(load_network("models:/linearcolournet-toy@best", store)(x), net(x))


@pytest.mark.parametrize(
    "class_path",
    ["os.system", "subprocess.Popen", "builtins.eval", "antigravity.Anything", "torch.nn.functional.relu"],
)
def test_a_tampered_config_is_refused_before_anything_is_built(tmp_path, class_path):
    folder = tmp_path / "net"
    network_files.save(LinearColourNet(), folder, network_files.portable_config(LinearColourNet(), None))
    meta = json.loads((folder / "network.json").read_text())
    (folder / "network.json").write_text(json.dumps({**meta, "class_path": class_path, "init_args": {}}))
    with pytest.raises(UntrustedNetwork):
        network_files.load(folder)
    (folder / "network.json").write_text(
        json.dumps({**meta, "init_args": {"x": {"class_path": "os.system"}}})
    )  # arguments are plain values, never objects to build
    with pytest.raises((UntrustedNetwork, TypeError)):
        network_files.load(folder)


def test_tampered_weights_never_run_code(tmp_path, store):
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("fit"))
    uri = log_network(LinearColourNet(), run.info.run_id, store, "linearcolournet-toy", image_size=8)
    mv = client.get_model_version("linearcolournet-toy", "1")
    folder = logged_model_dir(client, uri, tmp_path)
    marker = tmp_path / MARKER
    torch.save({"linear.weight": Payload(str(marker))}, os.path.join(folder, "network.pt"))
    client.log_model_artifacts(mv.source.removeprefix("models:/"), folder)  # the store now holds the payload
    with pytest.raises(ValueError, match="could not be loaded.*Unsupported global"):
        load_network(uri, store)
    assert not marker.exists()


def test_a_pickled_model_of_an_older_version_is_refused_unless_allowed(tmp_path, store, monkeypatch):
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("old"))
    with tracking_uri_set_to(store), mlflow.start_run(run_id=run.info.run_id):
        info = mlflow.pytorch.log_model(LinearColourNet(), name="model", serialization_format="pickle")
        mlflow.register_model(info.model_uri, "old-toy")
    with pytest.raises(ValueError, match="stored with pickle"):
        load_network("models:/old-toy/1", store)
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    assert isinstance(load_network("models:/old-toy/1", store), LinearColourNet)


def test_a_network_its_config_cannot_rebuild_is_refused_at_registration(tmp_path, store):
    class Unbuildable(LinearColourNet):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.extra = torch.nn.Linear(width, 1)

    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("fit"))
    with pytest.raises(ValueError, match="cannot be stored without pickle"):
        log_network(Unbuildable(3), run.info.run_id, store, "x-toy", image_size=8)
