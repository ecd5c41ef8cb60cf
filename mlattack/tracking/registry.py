"""Trained networks in and out of the MLflow model registry (and plain checkpoints).

What is registered is the bare network — image in [0, 1] → logits — stored without pickle
(:mod:`mlattack.tracking.network_files`: weights read with ``weights_only=True`` plus a JSON config), as an MLflow
logged model named after the registered model, so whoever loads it (the attack loop, a notebook) needs neither
Lightning nor the training code's configuration, and a tampered registry cannot run code. Versions carry tags
(validation mAP, epoch, class names, image size, weights digest) and a description.

Alias policy (per registered model ``<network>-<dataset>``, i.e. one dataset and model family;
:mod:`mlattack.tracking.promotion`):

- ``@best`` moves to a new version only when that version's validation mAP (the best checkpoint's ``val/mAP``,
  stored as the version tag ``mlattack.val_mAP``) is strictly higher than the mAP of the version ``@best`` names
  now. A version without a score never displaces a scored one; a current ``@best`` without a score (registered by
  hand or by an older mlattack), or one of another dataset or network (a name reused across families), is
  replaced.
- The newest version is always ``models:/<name>/latest`` (MLflow reserves the alias ``latest`` for that; ``@latest``
  is accepted as a synonym wherever mlattack loads a model).
- Registration is idempotent per fit run: a fit resumed after a kill in the middle of registering reuses the
  version its run already registered (same weights digest) instead of adding a second one, and the logged model a
  kill left without a version (:func:`~mlattack.tracking.promotion.unregistered_logged_model`).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path

import mlflow
import pytorch_lightning as pl
import torch
from mlflow.entities import LoggedModelOutput
from mlflow.models import Model, ModelSignature
from pytorch_lightning.callbacks import Callback
from torch import nn

import mlattack
from mlattack.errors import with_hint
from mlattack.tracking import network_files
from mlattack.tracking.callbacks import mlflow_logger
from mlattack.tracking.checkpoints import EXPECTED, CheckpointError, read_checkpoint_bytes
from mlattack.tracking.lineage import network_schemas
from mlattack.tracking.network_files import weights_digest
from mlattack.tracking.promotion import (
    CLASSES_TAG,
    DATASET_TAG,
    DEFAULT_ALIAS,
    DIGEST_TAG,
    EPOCH_TAG,
    IMAGE_SIZE_TAG,
    MODEL_VERSIONS_TAG,
    NETWORK_TAG,
    SCORE_TAG,
    ensure_registered_model,
    mark_registered,
    promote,
    unregistered_logged_model,
    version_note,
)
from mlattack.tracking.record import NOTE_TAG
from mlattack.tracking.store import NO_MODEL_HINT, tracking_uri_set_to

__all__ = ["DEFAULT_ALIAS", "DIGEST_TAG", "MODEL_VERSIONS_TAG", "SCORE_TAG", "RegisterBestModel", "load_network",
           "log_network", "promote", "registered_name", "weights_digest"]  # fmt: skip

log = logging.getLogger(__name__)

#: opt-in for versions an older mlattack stored with pickle (loading them can run code)
ALLOW_PICKLE_ENV = "MLATTACK_ALLOW_PICKLED_MODELS"


def registered_name(net: nn.Module, source: str) -> str:
    """Predictable registry name: ``<network>-<dataset>``, e.g. ``mlgcn-voc2007``."""
    return f"{type(net).__name__.lower()}-{source}"


def log_network(
    net: nn.Module,
    run_id: str,
    tracking_uri: str,
    name: str,
    image_size: int,
    alias: str = DEFAULT_ALIAS,
    score: float | None = None,
    dataset: str | None = None,
    config: dict | None = None,
    class_names: list[str] | None = None,
    epoch: int | None = None,
    extra_tags: dict[str, str] | None = None,
) -> str:
    """Log ``net`` as a logged model ``name`` of run ``run_id`` (no pickle), register it as ``name`` with its tags
    and description, and apply the alias policy with its validation ``score``. Returns ``models:/name/version``.

    ``config`` is the network's ``class_path``/``init_args`` (what LightningCLI parsed); without it, one is read
    from the network's attributes. Either way it must rebuild these weights, else a ValueError says so.
    """
    net = copy.deepcopy(net).cpu().eval()
    client = mlflow.MlflowClient(tracking_uri)
    digest = weights_digest(net)
    tags = {DIGEST_TAG: digest, NETWORK_TAG: type(net).__name__.lower(), IMAGE_SIZE_TAG: str(int(image_size))}
    tags.update({k: v for k, v in ((DATASET_TAG, dataset), (EPOCH_TAG, epoch)) if v is not None})
    tags.update(extra_tags or {})  # e.g. how the network was trained adversarially
    if score is not None:
        tags[SCORE_TAG] = repr(float(score))
    if class_names is not None:
        tags[CLASSES_TAG] = json.dumps(list(class_names))[:5000]
    tags = {k: str(v) for k, v in tags.items()}
    version = _registered_by_run(client, name, run_id, digest)
    if version is None:
        model_id = unregistered_logged_model(client, run_id, name, digest)  # a killed registration's
        if model_id is None:
            model_id = _log_logged_model(client, net, run_id, name, int(image_size), config, tags)
        ensure_registered_model(client, name, tags)
        # MLflow resolves a `models:/<model id>` source through the global tracking URI, not the client's
        with tracking_uri_set_to(tracking_uri):
            mv = client.create_model_version(
                name,
                f"models:/{model_id}",
                run_id=run_id,
                tags=tags,
                model_id=model_id,
                description=version_note(net, tags, run_id, _model_page(client, run_id, model_id)),
            )
        version = mv.version
    # what the logged model's page reads to show its registered versions
    mark_registered(client, client.get_model_version(name, str(version)).source, name, str(version))
    promote(client, name, str(version), score, tags.get(DATASET_TAG), tags[NETWORK_TAG], alias)
    return f"models:/{name}/{version}"


def _model_page(client: mlflow.MlflowClient, run_id: str, model_id: str) -> str:
    """The MLflow UI route of a logged model (under its fit run's experiment)."""
    return f"#/experiments/{client.get_run(run_id).info.experiment_id}/models/{model_id}"


def _log_logged_model(client, net, run_id: str, name: str, image_size: int, config, tags: dict) -> str:
    """The network's files as an MLflow logged model of the fit run (its output), READY once uploaded."""
    stored = network_files.portable_config(net, config)
    experiment_id = client.get_run(run_id).info.experiment_id
    params = {
        "class_path": stored["class_path"],
        "image_size": str(image_size),
        "format": network_files.FORMAT,
    }
    note = {NOTE_TAG: version_note(net, tags, run_id)}  # the logged model's description in the UI
    model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, tags={**tags, **note},
                                       params=params, model_type="mlattack-network")  # fmt: skip
    extra = {"image_size": image_size, "weights_digest": tags[DIGEST_TAG], "torch": torch.__version__,
             "mlattack": mlattack.__version__}  # fmt: skip
    if CLASSES_TAG in tags:
        extra["class_names"] = json.loads(tags[CLASSES_TAG]) if tags[CLASSES_TAG].endswith("]") else None
    with tempfile.TemporaryDirectory() as tmp:
        network_files.save(net, Path(tmp), stored, extra)
        _mlmodel(net, image_size, model.model_id, run_id).save(str(Path(tmp) / "MLmodel"))
        client.log_model_artifacts(model.model_id, tmp)
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def _mlmodel(net: nn.Module, image_size: int, model_id: str, run_id: str) -> Model:
    """The ``MLmodel`` file: the network's signature (what the version page shows as its input and output schema)
    and an ``mlattack`` flavor naming the files' format; no pyfunc flavor (the network loads with
    :func:`load_network`, not pickle)."""
    with torch.no_grad():
        num_classes = int(net(torch.zeros(1, 3, image_size, image_size)).shape[-1])
    inputs, outputs = network_schemas(image_size, num_classes)
    model = Model(run_id=run_id, model_id=model_id, signature=ModelSignature(inputs, outputs))
    model.add_flavor(
        "mlattack", format=network_files.FORMAT, loader="mlattack.tracking.registry.load_network"
    )
    return model


def _registered_by_run(client: mlflow.MlflowClient, name: str, run_id: str, digest: str) -> str | None:
    """The version of ``name`` that run ``run_id`` already registered with these weights (a resumed fit)."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except mlflow.exceptions.MlflowException:
        return None
    same = [v for v in versions if v.tags.get(DIGEST_TAG) == digest]
    return str(min(int(v.version) for v in same)) if same else None


def resolve_alias(uri: str) -> str:
    """``models:/<name>@latest`` -> ``models:/<name>/latest`` (MLflow reserves the alias ``latest``)."""
    if uri.startswith("models:/") and uri.lower().endswith("@latest"):
        return uri[: -len("@latest")] + "/latest"
    return uri


def _load_registered(uri: str, tracking_uri: str | None, map_location) -> nn.Module:
    with tempfile.TemporaryDirectory() as tmp, tracking_uri_set_to(tracking_uri):
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=resolve_alias(uri), dst_path=tmp,
                                                          tracking_uri=tracking_uri))  # fmt: skip
        if network_files.is_network_folder(folder):
            return network_files.load(folder, map_location)
        if not (folder / "MLmodel").is_file():
            raise ValueError(f"model {uri!r} holds no network (no {network_files.CONFIG})")
        if os.environ.get(ALLOW_PICKLE_ENV) != "1":
            raise ValueError(
                f"model {uri!r} was stored with pickle by an older mlattack; loading it could run code, so it is "
                f"refused. Attack its fit checkpoint (.ckpt) instead, re-register it with this version, or set "
                f"{ALLOW_PICKLE_ENV}=1 if you trust this store"
            )
        return mlflow.pytorch.load_model(str(folder), map_location=map_location)


def load_network(
    uri: str, tracking_uri: str | None = None, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load a network from ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/...`` or a
    Lightning checkpoint written by ``mlattack fit`` (read with ``weights_only=True``; a bad file raises
    :class:`~mlattack.tracking.checkpoints.CheckpointError` saying what it is)."""
    if uri.startswith(("models:/", "runs:/")):
        try:
            net = _load_registered(uri, tracking_uri, map_location)
        except (
            mlflow.exceptions.MlflowException,
            network_files.UntrustedNetwork,
            OSError,
            pickle.UnpicklingError,
        ) as e:
            where = tracking_uri or mlflow.get_tracking_uri()
            error = ValueError(f"model {uri!r} could not be loaded from tracking store {where}: {e}")
            missing = getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"
            raise with_hint(error, NO_MODEL_HINT if missing else None) from e
        return net.eval()
    try:
        data, _ = read_checkpoint_bytes(uri)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"model {uri!r}: not a models:/<name>/<version>, models:/<name>@<alias> URI and no checkpoint file there"
        ) from None
    from mlattack.models.module import MultiLabelClassifier

    try:
        module = MultiLabelClassifier.load_from_checkpoint(
            io.BytesIO(data), map_location=map_location, weights_only=True
        )
    except Exception as e:  # noqa: BLE001 - hyper_parameters or weights that do not make the network
        raise CheckpointError(
            f"checkpoint {uri}: a Lightning checkpoint, but its hyper_parameters and weights do not make an "
            f"`mlattack fit` model ({type(e).__name__}: {str(e)[:300]}); {EXPECTED}"
        ) from e
    return module.net.eval()


class RegisterBestModel(Callback):
    """At the end of a fit, register the best checkpoint's network (by the checkpoint monitor, val/mAP).

    Arguments:
        name: registry name; default ``<network>-<data source>``.
        alias: the alias that follows the best validation mAP (default ``best``; policy in the module docstring).
    """

    def __init__(self, name: str | None = None, alias: str = DEFAULT_ALIAS) -> None:
        if alias.lower() == "latest":
            raise ValueError(
                "registry.alias: 'latest' is MLflow's reserved name for the newest version "
                "(models:/<name>/latest); choose another alias, e.g. 'best'"
            )
        self.name, self.alias = name, alias
        self.model_uri: str | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero or trainer.interrupted:
            return
        client, run_id = logger.experiment, logger.run_id
        net, score, epoch = pl_module.net, None, None
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        if best:
            saved = torch.load(best, map_location="cpu", weights_only=True)
            state, epoch = saved["state_dict"], saved.get("epoch")
            net = copy.deepcopy(net).cpu()
            net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
            client.set_tag(run_id, "best_checkpoint", best)
            best_score = getattr(ckpt, "best_model_score", None)
            if best_score is not None:
                score = float(best_score)
                if client.get_run(run_id).data.metrics.get("best/val_mAP") != score:
                    logger.log_metrics(
                        {"best/val_mAP": score}
                    )  # once, also when a resumed fit registers again
        dm = trainer.datamodule
        source = getattr(dm, "source", "data")
        name = self.name or registered_name(pl_module.net, source)
        config = pl_module.hparams.get("net") if hasattr(pl_module, "hparams") else None
        self.model_uri = log_network(
            net, run_id, client.tracking_uri, name, int(getattr(dm, "image_size", 64)), self.alias, score=score,
            dataset=source, config=config if isinstance(config, dict) and "class_path" in config else None,
            class_names=list(dm.class_names) if hasattr(dm, "class_names") else None, epoch=epoch,
            extra_tags=pl_module.registry_tags() if hasattr(pl_module, "registry_tags") else None,
        )  # fmt: skip
        client.set_tag(run_id, "registered_model", self.model_uri)
        summary = f"best val mAP {score:.4f} at epoch {epoch}" if score is not None else "no validation score"
        client.set_tag(run_id, NOTE_TAG, f"`mlattack fit` of {type(pl_module.net).__name__} on {source}: "
                       f"{summary}; registered as `{self.model_uri}` (`@{self.alias}`: best by val mAP).")  # fmt: skip
        log.info("registered %s", self.model_uri)
        print(
            f"Registered model: {self.model_uri}  (newest: models:/{name}/latest; best by val mAP: "
            f"models:/{name}@{self.alias})"
        )
