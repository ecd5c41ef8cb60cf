"""Where runs go: the default local MLflow store and the run context (tags) every run carries."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

DEFAULT_STORE_DIR = Path("mlruns")
EXPERIMENT = "mlattack"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite database in ``./mlruns`` (artifacts beside it).

    MLflow 3 refuses a bare ``./mlruns`` file store; SQLite gives runs, the model registry and ``mlflow ui`` with
    no server to start.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    store = DEFAULT_STORE_DIR.resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """For the local SQLite store, keep artifacts next to the database (``mlruns/artifacts``)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def git_commit() -> str:
    """The source tree's commit (``+dirty`` when modified), or "unknown" outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_tags(seed: int | None = None) -> dict[str, str]:
    """Reproducibility tags: seed, library versions, git commit, host."""
    import mlflow
    import pytorch_lightning
    import torch
    import torchmetrics
    import torchvision

    import mlattack

    tags = {
        "mlattack.version": mlattack.__version__,
        "git.commit": git_commit(),
        "torch.version": torch.__version__,
        "torchvision.version": torchvision.__version__,
        "lightning.version": pytorch_lightning.__version__,
        "torchmetrics.version": torchmetrics.__version__,
        "mlflow.version": mlflow.__version__,
        "python.version": platform.python_version(),
        "host": platform.node(),
    }
    if seed is not None:
        tags["seed"] = str(seed)
    return tags
