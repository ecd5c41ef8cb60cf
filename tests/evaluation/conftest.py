import mlflow
import pytest
import torch

from mlattack.data.datamodule import SOURCES, MultiLabelDataModule
from mlattack.tracking.registry import log_network
from tests.evaluation.toy import LinearColourNet


@pytest.fixture
def toy_source(monkeypatch):
    monkeypatch.setitem(SOURCES, "toy", ("tests.evaluation.toy", "ToyColours", False))
    return "toy"


@pytest.fixture
def toy_data(toy_source):
    return MultiLabelDataModule(source=toy_source, image_size=8, batch_size=4, num_workers=0)


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def registered_toy_model(store):
    """The linear colour model, logged and registered as `linearcolournet-toy` in a real SQLite store."""
    client = mlflow.MlflowClient(store)
    exp = client.create_experiment("models")
    run = client.create_run(exp)
    torch.manual_seed(0)
    uri = log_network(LinearColourNet(), run.info.run_id, store, "linearcolournet-toy", image_size=8)
    client.set_terminated(run.info.run_id)
    return uri
