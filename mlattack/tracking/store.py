"""Where runs go: the default local MLflow store and the run context (tags) every run carries.

A new SQLite store is created (MLflow runs its schema migrations) under a file lock beside the database, so two
commands started together on a fresh store do not race through the migrations (:func:`prepare_store`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from mlattack.errors import EnvironmentFault

DEFAULT_STORE_DIR = Path("mlruns")
EXPERIMENT = "mlattack"
#: what to do when a models:/ URI names nothing in the store searched
NO_MODEL_HINT = (
    "train one with `mlattack fit` (it registers models:/<net>-<data>@best), or point MLFLOW_TRACKING_URI at the "
    "store that holds it (the default is ./mlruns in the folder you run from)"
)

#: MLflow's own HTTP client retries 7 times with exponential backoff (about 4 minutes) and waits 120 s per request.
#: A job that logs to a server that has gone away should fail in seconds, keeping its local checkpoints and
#: per-batch records for the resume; these bounds apply only where the variable is not already set.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class TrackingServerUnreachable(EnvironmentFault):
    """The MLflow tracking server named by the tracking URI did not answer."""


def default_tracking_uri(create: bool = True) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite database in ``./mlruns`` (artifacts beside it), created
    unless ``create`` is false (a command that only names the store, e.g. as a default, leaves no folder behind).

    MLflow 3 refuses a bare ``./mlruns`` file store; SQLite gives runs, the model registry and ``mlflow ui`` with
    no server to start.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = env or f"sqlite:///{DEFAULT_STORE_DIR.resolve() / 'mlflow.db'}"
    if create:
        prepare_store(uri)  # makes the folder of a local SQLite store
    return uri


_PREPARED: set[str] = set()


def prepare_store(uri: str) -> None:
    """Create and migrate a local SQLite store under a file lock (``<db>.lock``); other stores are left alone.

    MLflow migrates an empty SQLite database the first time a client opens it; two processes doing that at once
    both fail and can leave a half-migrated schema behind. Under the lock the second one finds the finished schema.
    Done once per process and URI.
    """
    if not uri.startswith("sqlite:///") or uri in _PREPARED:
        return
    import mlflow

    from mlattack.rundir.lock import file_lock

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".lock")):
        client = mlflow.MlflowClient(uri)  # creates the tables and runs the migrations when the file is new
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _PREPARED.add(uri)


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast when an ``http(s)://`` tracking server does not answer, instead of MLflow's minutes of retries.

    One GET of the experiments-search endpoint with ``timeout`` seconds. An answer, or a 401/403 (credentials are
    MLflow's business), counts as reachable; no answer, a 404 (not an MLflow server at that URI) or a 5xx does not.
    Also bounds MLflow's own retries (:data:`HTTP_DEFAULTS`) unless the user has set them. Local stores
    (``sqlite:``, ``file:``, paths) are not checked; a new SQLite store is created under a lock
    (:func:`prepare_store`).
    """
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if not uri.startswith(("http://", "https://")):
        prepare_store(uri)
        return
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code != 404 and e.code < 500:
            return
        reason = f"HTTP {e.code} from {url}: not an MLflow tracking server there, or a failing one"
    except (urllib.error.URLError, OSError) as e:
        reason = f"{getattr(e, 'reason', e)}; waited at most {timeout:g} s"
    raise TrackingServerUnreachable(
        f"MLflow tracking server {uri} is unreachable ({reason}). Start it (`mlflow server --backend-store-uri "
        "sqlite:///mlflow.db --host 127.0.0.1 --port <port>`), fix MLFLOW_TRACKING_URI or the logger's "
        "tracking_uri, or unset it to log to the local SQLite store in ./mlruns. Work already written locally "
        "(checkpoints, attack records) is kept: re-run the same command to resume."
    )


def default_artifact_location(tracking_uri: str) -> str | None:
    """For the local SQLite store, keep artifacts next to the database (``mlruns/artifacts``)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def mlflow_ui_command(uri: str) -> str:
    """``mlflow ui`` as a command that works from this shell: the ``mlflow`` beside this Python (the venv's, which
    is not on PATH unless the venv is activated), else ``python -m mlflow`` with this Python."""
    beside = Path(sys.executable).with_name("mlflow")
    on_path = shutil.which("mlflow")
    if beside.is_file() and (on_path is None or Path(on_path).resolve() != beside.resolve()):
        program = shlex.quote(str(beside.absolute()))
    elif on_path:
        program = "mlflow"
    else:
        program = f"{shlex.quote(sys.executable)} -m mlflow"
    return f"{program} ui --backend-store-uri {shlex.quote(uri)}"


def git_commit() -> str:
    """The source tree's commit (``+dirty`` when modified), or "unknown" outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
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


@contextlib.contextmanager
def tracking_uri_set_to(uri: str | None):
    """Point MLflow's fluent API at ``uri`` for a block, then restore the previous URI (and environment).

    ``mlflow.set_tracking_uri`` also rewrites ``MLFLOW_TRACKING_URI``; restoring keeps library calls free of
    process-wide side effects.
    """
    import mlflow

    if uri is None:
        yield
        return
    env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env
