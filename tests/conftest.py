"""Suite-wide safety net: no test writes to the product's default store (./mlruns) by accident."""

import pytest


@pytest.fixture(autouse=True)
def _isolated_tracking_store(tmp_path_factory, monkeypatch):
    import os

    if "MLFLOW_TRACKING_URI" not in os.environ:
        db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")


@pytest.fixture(autouse=True)
def _isolated_help_cache(tmp_path_factory, monkeypatch):
    """`mlattack <command> --help` keeps its text in a cache folder: never the user's ~/.cache during tests."""
    import os

    if "MLATTACK_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("MLATTACK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _restore_global_tracking_uri():
    """A test that points MLflow's process-wide tracking URI elsewhere (a server it then stops, a temp store) must not
    leave the next test talking to it."""
    import os

    import mlflow

    env, uri = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    yield
    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env
