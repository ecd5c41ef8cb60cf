"""The settings a registered network was trained with, read back from the fit run that registered it (its
``config.yaml``), so that ``mlattack test --ckpt_path models:/<name>@best`` needs no ``--config`` or ``--model``:
the network's class and arguments, and the data it was trained on, are the fit's own."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from mlattack.errors import UserError
from mlattack.tracking.store import NO_MODEL_HINT

#: the parts of the fit's config that describe the network and its data (the trainer's settings are the fit's)
SECTIONS = ("model", "data")


def source_run(uri: str, tracking_uri: str) -> str:
    """The run behind ``models:/<name>@<alias>``, ``models:/<name>/<version|latest>`` or ``runs:/<id>/...``."""
    import mlflow

    if uri.startswith("runs:/"):
        return uri[len("runs:/") :].split("/", 1)[0]
    client = mlflow.MlflowClient(tracking_uri)
    ref = uri[len("models:/") :]
    name, sep, version = ref.partition("@") if "@" in ref else ref.partition("/")
    try:
        if version.lower() == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise mlflow.exceptions.MlflowException(f"Registered Model with name={name} not found")
            return max(versions, key=lambda v: int(v.version)).run_id
        found = (
            client.get_model_version_by_alias(name, version)
            if sep == "@"
            else client.get_model_version(name, version)
        )
        return found.run_id
    except mlflow.exceptions.MlflowException as e:
        raise UserError(
            f"--ckpt_path: {uri}: no such registered model or alias in the tracking store {tracking_uri} "
            f"({getattr(e, 'message', e)})",
            hint=NO_MODEL_HINT,
        ) from e


def fit_settings(uri: str, tracking_uri: str) -> dict | None:
    """``{"model": ..., "data": ...}`` of the fit run behind ``uri``; None when that run logged no config (a
    network registered by other means: then ``--config``/``--model`` are needed as before)."""
    import mlflow

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).is_file():
        raise UserError(
            f"--ckpt_path: {uri}: there is no tracking store at {tracking_uri}", hint=NO_MODEL_HINT
        )  # not created just to say it is empty
    run_id = source_run(uri, tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(
                mlflow.MlflowClient(tracking_uri).download_artifacts(run_id, "config.yaml", tmp)
            ).read_text()
    except (mlflow.exceptions.MlflowException, OSError):
        return None
    config = yaml.safe_load(text) or {}
    settings = {key: config[key] for key in SECTIONS if isinstance(config.get(key), dict)}
    return settings if "model" in settings else None
