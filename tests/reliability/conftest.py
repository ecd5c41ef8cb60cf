"""Shared fixtures: creating an MLflow SQLite store runs all of MLflow's migrations (seconds on a busy machine), so
one migrated database is made per session and copied wherever a test needs a fresh store."""

import shutil
from pathlib import Path

import mlflow
import pytest

from tests.evaluation.conftest import registered_toy_model, toy_source  # noqa: F401 - shared fixtures


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments()  # creates and migrates the schema
    return db


@pytest.fixture
def fresh_store(store_template):
    """``fresh_store(folder) -> "sqlite:///<folder>/mlflow.db"``: an empty, migrated store of its own."""

    def make(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(store_template, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    return make


@pytest.fixture
def store(tmp_path, fresh_store, monkeypatch):
    """A fresh store that is also the process's default (``MLFLOW_TRACKING_URI``)."""
    uri = fresh_store(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
