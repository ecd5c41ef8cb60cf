"""Suite-wide safety net: no test writes to the product's default store (./mlruns) by accident."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_tracking_store(tmp_path_factory, monkeypatch):
    import os

    if "MLFLOW_TRACKING_URI" not in os.environ:
        db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
