"""Trained networks in and out of the MLflow model registry (and plain checkpoints).

What is registered is the bare network — image in [0, 1] → logits — so whoever loads it (the attack loop, a
notebook) needs neither Lightning nor the training code's configuration.

Alias policy (per registered model ``<network>-<dataset>``, i.e. one dataset and model family):

- ``@best`` moves to a new version only when that version's validation mAP (the best checkpoint's ``val/mAP``,
  stored as the version tag ``mlattack.val_mAP``) is strictly higher than the mAP of the version ``@best`` names
  now. A version without a score never displaces a scored one; a current ``@best`` without a score (registered by
  hand or by an older mlattack), or one of another dataset or network (a name reused across families), is
  replaced.
- The newest version is always ``models:/<name>/latest`` (MLflow reserves the alias ``latest`` for that; ``@latest``
  is accepted as a synonym wherever mlattack loads a model).
- Registration is idempotent per fit run: a fit resumed after a kill in the middle of registering reuses the
  version its run already registered (same weights digest) instead of adding a second one.
"""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import logging

import mlflow
import numpy as np
import pytorch_lightning as pl
import torch
from mlflow.models import infer_signature
from pytorch_lightning.callbacks import Callback
from torch import nn

import mlattack
from mlattack.tracking.callbacks import mlflow_logger
from mlattack.tracking.checkpoints import EXPECTED, CheckpointError, read_checkpoint_bytes
from mlattack.tracking.store import tracking_uri_set_to

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "best"
SCORE_TAG, DIGEST_TAG = "mlattack.val_mAP", "mlattack.weights_digest"
DATASET_TAG, NETWORK_TAG = "mlattack.dataset", "mlattack.network"


def registered_name(net: nn.Module, source: str) -> str:
    """Predictable registry name: ``<network>-<dataset>``, e.g. ``mlgcn-voc2007``."""
    return f"{type(net).__name__.lower()}-{source}"


def weights_digest(net: nn.Module) -> str:
    """What the network computes with: its class and every parameter and buffer (name, dtype, shape, bytes).

    Two networks with equal digests give equal outputs; a model re-registered under a reused name/version, or a
    checkpoint file replaced in place, gets a new digest. Used in the attack runs' keys (identity by content).
    """
    h = hashlib.sha256(f"{type(net).__module__}.{type(net).__qualname__}".encode())
    for name, t in itertools.chain(net.named_parameters(), net.named_buffers()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _example_input(net: nn.Module, image_size: int) -> torch.Tensor:
    return torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))


def log_network(
    net: nn.Module,
    run_id: str,
    tracking_uri: str,
    name: str,
    image_size: int,
    alias: str = DEFAULT_ALIAS,
    score: float | None = None,
    dataset: str | None = None,
) -> str:
    """Log ``net`` as an MLflow PyTorch model in run ``run_id``, register it as ``name`` and apply the alias policy
    (module docstring) with its validation ``score``. Returns the ``models:/name/version`` URI."""
    net = copy.deepcopy(net).cpu().eval()
    client = mlflow.MlflowClient(tracking_uri)
    tags = {DIGEST_TAG: weights_digest(net), NETWORK_TAG: type(net).__name__.lower()}
    if dataset is not None:
        tags[DATASET_TAG] = str(dataset)
    if score is not None:
        tags[SCORE_TAG] = repr(float(score))
    version = _registered_by_run(client, name, run_id, tags[DIGEST_TAG])
    if version is None:
        x = _example_input(net, image_size)
        with torch.no_grad():
            y = net(x)
        signature = infer_signature(x.numpy().astype(np.float32), y.numpy().astype(np.float32))
        with tracking_uri_set_to(tracking_uri):
            with mlflow.start_run(run_id=run_id):
                # "pickle" keeps the nn.Module (any batch size, autograd for the attacks); "pt2" traces a fixed graph
                info = mlflow.pytorch.log_model(
                    net,
                    name="model",
                    signature=signature,
                    serialization_format="pickle",
                    pip_requirements=[
                        f"torch=={torch.__version__.split('+')[0]}",
                        f"mlattack=={mlattack.__version__}",
                    ],
                )
            # one call creates the version with its tags: a kill cannot leave an untagged version behind
            version = mlflow.register_model(info.model_uri, name, tags=tags).version
    promote(client, name, str(version), score, tags.get(DATASET_TAG), tags[NETWORK_TAG], alias)
    return f"models:/{name}/{version}"


def _registered_by_run(client: mlflow.MlflowClient, name: str, run_id: str, digest: str) -> str | None:
    """The version of ``name`` that run ``run_id`` already registered with these weights (a resumed fit)."""
    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except mlflow.exceptions.MlflowException:
        return None
    same = [v for v in versions if v.tags.get(DIGEST_TAG) == digest]
    return str(min(int(v.version) for v in same)) if same else None


def _score_of(client: mlflow.MlflowClient, version) -> float | None:
    """A version's validation mAP: its tag, else its run's ``best/val_mAP`` (versions of older mlattack)."""
    if SCORE_TAG in version.tags:
        return float(version.tags[SCORE_TAG])
    try:
        value = client.get_run(version.run_id).data.metrics.get("best/val_mAP") if version.run_id else None
    except mlflow.exceptions.MlflowException:
        return None
    return None if value is None else float(value)


def promote(
    client: mlflow.MlflowClient,
    name: str,
    version: str,
    score: float | None,
    dataset: str | None,
    network: str,
    alias: str = DEFAULT_ALIAS,
) -> bool:
    """Point ``@alias`` at ``version`` if the policy in the module docstring says so; True if it names it now."""
    try:
        current = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        current = None
    if current is not None and str(current.version) == str(version):
        return True
    keep = None
    if current is not None:
        cur_dataset, cur_network = current.tags.get(DATASET_TAG), current.tags.get(NETWORK_TAG)
        other_family = cur_network not in (None, network) or (
            dataset is not None and cur_dataset not in (None, dataset)
        )
        best = _score_of(client, current)
        if other_family:
            log.warning(
                "@%s of %s was version %s of another dataset or network; replacing it",
                alias,
                name,
                current.version,
            )
        elif best is not None and score is None:
            keep = f"version {version} has no validation mAP to compare with version {current.version}'s {best:.4f}"
        elif best is not None and score <= best:
            keep = f"its validation mAP {score:.4f} does not beat version {current.version}'s {best:.4f}"
    if keep is not None:
        print(f"models:/{name}@{alias} stays at version {current.version}: {keep}")
        return False
    client.set_registered_model_alias(name, alias, str(version))
    return True


def resolve_alias(uri: str) -> str:
    """``models:/<name>@latest`` -> ``models:/<name>/latest`` (MLflow reserves the alias ``latest``)."""
    if uri.startswith("models:/") and uri.lower().endswith("@latest"):
        return uri[: -len("@latest")] + "/latest"
    return uri


def load_network(
    uri: str, tracking_uri: str | None = None, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load a network from ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/...`` or a
    Lightning checkpoint written by ``mlattack fit`` (read with ``weights_only=True``; a bad file raises
    :class:`~mlattack.tracking.checkpoints.CheckpointError` saying what it is)."""
    if uri.startswith(("models:/", "runs:/")):
        try:
            with tracking_uri_set_to(tracking_uri):
                net = mlflow.pytorch.load_model(resolve_alias(uri), map_location=map_location)
        except mlflow.exceptions.MlflowException as e:
            where = tracking_uri or mlflow.get_tracking_uri()
            raise ValueError(f"model {uri!r} could not be loaded from tracking store {where}: {e}") from e
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
        net = pl_module.net
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        score = None
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            net = copy.deepcopy(net).cpu()
            net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
            logger.experiment.set_tag(logger.run_id, "best_checkpoint", best)
            best_score = getattr(ckpt, "best_model_score", None)
            if best_score is not None:
                score = float(best_score)
                if logger.experiment.get_run(logger.run_id).data.metrics.get("best/val_mAP") != score:
                    logger.log_metrics(
                        {"best/val_mAP": score}
                    )  # once, also when a resumed fit registers again
        dm = trainer.datamodule
        source = getattr(dm, "source", "data")
        image_size = int(getattr(dm, "image_size", 64))
        name = self.name or registered_name(pl_module.net, source)
        self.model_uri = log_network(
            net,
            logger.run_id,
            logger._tracking_uri,
            name,
            image_size,
            self.alias,
            score=score,
            dataset=source,
        )
        logger.experiment.set_tag(logger.run_id, "registered_model", self.model_uri)
        log.info("registered %s", self.model_uri)
        print(
            f"Registered model: {self.model_uri}  (newest: models:/{name}/latest; best by val mAP: "
            f"models:/{name}@{self.alias})"
        )
