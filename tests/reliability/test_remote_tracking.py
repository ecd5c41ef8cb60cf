"""A real ``mlflow server`` (SQLite backend, proxied artifacts) on 127.0.0.1: fit, registry and attack through it;
an unreachable server fails in seconds; a server that dies mid-attack loses no local work."""

import socket
import time

import mlflow
import pytest
import torch
from pytorch_lightning.callbacks import Callback

from mlattack.attacks import FGSM, PGD
from mlattack.cli import lightning_main, main
from mlattack.data.datamodule import SOURCES, MultiLabelDataModule
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.tracking.parent_run import success_note
from mlattack.tracking.registry import load_network, log_network
from mlattack.tracking.store import HTTP_DEFAULTS, TrackingServerUnreachable, check_tracking_uri
from tests.evaluation.toy import LinearColourNet
from tests.reliability.helpers import (
    MlflowServer,
    free_port,
    jsonl_positions,
    keep_tracking_uri,
    tiny_fit_args,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, store_template):
    srv = MlflowServer(tmp_path_factory.mktemp("server"))
    srv.db.write_bytes(store_template.read_bytes())
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def remote_toy_model(server):
    """The toy linear model, registered on the server."""
    client = mlflow.MlflowClient(server.uri)
    run = client.create_run(client.create_experiment("models"))
    with keep_tracking_uri():
        uri = log_network(LinearColourNet(), run.info.run_id, server.uri, "linearcolournet-toy", image_size=8)
    client.set_terminated(run.info.run_id)
    return uri


@pytest.fixture
def toy_data(monkeypatch):
    monkeypatch.setitem(SOURCES, "toy", ("tests.evaluation.toy", "ToyColours", False))
    return MultiLabelDataModule(source="toy", image_size=8, batch_size=4, num_workers=0)


def attack(model, data, out, **kw):
    specs = [AttackSpec(attack=FGSM(eps=0.3)), AttackSpec(attack=PGD(eps=0.2, nb_iter=5, eps_iter=0.05))]
    return run_attacks(
        model,
        data,
        specs,
        num_samples=8,
        output_dir=str(out),
        batch_size=4,  # two batches of the 8 samples, so StopServerAt(server, 1) lands mid-attack
        panel_samples=0,
        progress_bar=False,
        accelerator="cpu",
        **kw,
    )


def test_fit_registry_and_attack_through_a_remote_server(
    server, remote_toy_model, toy_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    cli = lightning_main(tiny_fit_args(tmp_path / "out"))
    client = mlflow.MlflowClient(server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert run.info.status == "FINISHED" and "val/mAP" in run.data.metrics
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(server.artifacts.rglob("config.yaml"))  # uploaded through the server into its artifact store
    # the registered model comes back from the server and predicts exactly as the trained network
    net = load_network("models:/mlgcn-synthetic@best", server.uri)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(net(x), cli.model.net.eval()(x), atol=1e-6)  # the best epoch is the only epoch

    report = attack(remote_toy_model, toy_data, tmp_path / "attacks")
    parent = client.get_run(report.parent_run_id)
    assert parent.info.status == "FINISHED"
    table = success_note(report.metrics)  # each rate with its 95 % interval
    assert table in mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/success_table.md")
    for run_id in report.child_run_ids.values():
        child = client.get_run(run_id)
        assert child.info.status == "FINISHED" and child.data.metrics["num_samples"] == report.num_selected
        assert "samples.csv" in [a.path for a in client.list_artifacts(run_id)]


def test_unreachable_server_fails_fast_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLATTACK_DEBUG", "1")  # the exception itself, not mlattack's one-line rendering of it
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # a user's own setting is kept
    for argv in (
        ["attack", "--config", "configs/attack-demo.yaml", "--model", "models:/mlgcn-synthetic@best"],
        tiny_fit_args(tmp_path / "out"),
        ["report", "--output_dir", str(tmp_path / "report")],  # report too (it retried for 254 s)
    ):
        start = time.monotonic()
        with pytest.raises(
            TrackingServerUnreachable, match=f"(?s){closed} is unreachable.*Connection refused"
        ):
            main(argv)
        assert time.monotonic() - start < 20, argv[0]
    assert not any((tmp_path / "out").rglob("*.ckpt"))
    import os

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"

    # a server that accepts the connection but never answers: bounded by the timeout, not a hang
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        with pytest.raises(TrackingServerUnreachable, match="timed out"):
            check_tracking_uri(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1.0)
        assert time.monotonic() - start < 5


class StopServerAt(Callback):
    """Stops the tracking server when the attack pass reaches batch ``batch``."""

    def __init__(self, server: MlflowServer, batch: int) -> None:
        self.server, self.batch = server, batch

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == self.batch:
            self.server.stop()


def test_server_dying_mid_attack_loses_no_local_work(
    server, remote_toy_model, toy_data, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at the first refused request
    reference = attack(remote_toy_model, toy_data, tmp_path / "ref", experiment="reference")
    out = tmp_path / "out"
    with pytest.raises(Exception) as dead:
        attack(remote_toy_model, toy_data, out, experiment="dying", callbacks=[StopServerAt(server, 1)])
    assert "Connection refused" in str(dead.value) or "Max retries" in str(dead.value), repr(dead.value)
    files = sorted(out.rglob("*.jsonl"))
    lines = {f.name: len(f.read_text().splitlines()) for f in files}
    for f in files:  # the attack itself went on: every sample's record is on local disk
        assert sorted(jsonl_positions(f)) == list(range(reference.num_selected))

    server.start()  # same port, same store
    resumed = attack(remote_toy_model, toy_data, out, experiment="dying")
    assert resumed.resumed and resumed.table == reference.table
    assert {f.name: len(f.read_text().splitlines()) for f in files} == lines  # nothing attacked again
    client = mlflow.MlflowClient(server.uri)
    parents = client.search_runs(
        [client.get_experiment_by_name("dying").experiment_id],
        filter_string="tags.`mlflow.parentRunId` IS NULL",
    )
    assert [p.info.run_id for p in parents] == [resumed.parent_run_id]
    assert parents[0].info.status == "FINISHED"
    for run_id in resumed.child_run_ids.values():
        assert client.get_run(run_id).info.status == "FINISHED"
