"""Trained networks in and out of the MLflow model registry (and plain checkpoints).

What is registered is the bare network — image in [0, 1] → logits — so whoever loads it (the attack loop, a
notebook) needs neither Lightning nor the training code's configuration.
"""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path

import mlflow
import numpy as np
import pytorch_lightning as pl
import torch
from mlflow.models import infer_signature
from pytorch_lightning.callbacks import Callback
from torch import nn

import mlattack
from mlattack.tracking.callbacks import mlflow_logger
from mlattack.tracking.store import tracking_uri_set_to

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "best"


def registered_name(net: nn.Module, source: str) -> str:
    """Predictable registry name: ``<network>-<dataset>``, e.g. ``mlgcn-voc2007``."""
    return f"{type(net).__name__.lower()}-{source}"


def _example_input(net: nn.Module, image_size: int) -> torch.Tensor:
    return torch.rand(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))


def log_network(
    net: nn.Module, run_id: str, tracking_uri: str, name: str, image_size: int, alias: str = DEFAULT_ALIAS
) -> str:
    """Log ``net`` as an MLflow PyTorch model in run ``run_id``, register it as ``name`` and point ``alias`` at it.

    Returns the ``models:/name/version`` URI.
    """
    net = copy.deepcopy(net).cpu().eval()
    x = _example_input(net, image_size)
    with torch.no_grad():
        y = net(x)
    signature = infer_signature(x.numpy().astype(np.float32), y.numpy().astype(np.float32))
    client = mlflow.MlflowClient(tracking_uri)
    with tracking_uri_set_to(tracking_uri), mlflow.start_run(run_id=run_id):
        # "pickle" keeps the nn.Module (any batch size, autograd for the attacks); "pt2" would trace a fixed graph.
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            signature=signature,
            registered_model_name=name,
            serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlattack=={mlattack.__version__}"],
        )
    version = info.registered_model_version
    if version is None:  # stores without a registry
        raise RuntimeError(f"tracking store {tracking_uri} did not register model {name!r}")
    client.set_registered_model_alias(name, alias, str(version))
    return f"models:/{name}/{version}"


def load_network(uri: str, tracking_uri: str | None = None, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a network from ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``runs:/...`` or a
    Lightning checkpoint written by ``mlattack fit`` (loaded with ``weights_only=True``)."""
    if uri.startswith(("models:/", "runs:/")):
        try:
            with tracking_uri_set_to(tracking_uri):
                net = mlflow.pytorch.load_model(uri, map_location=map_location)
        except mlflow.exceptions.MlflowException as e:
            where = tracking_uri or mlflow.get_tracking_uri()
            raise ValueError(f"model {uri!r} could not be loaded from tracking store {where}: {e}") from e
        return net.eval()
    path = Path(uri)
    if not path.is_file():
        raise FileNotFoundError(
            f"model {uri!r}: not a models:/<name>/<version>, models:/<name>@<alias> URI and no checkpoint file there"
        )
    from mlattack.models.module import MultiLabelClassifier

    try:
        module = MultiLabelClassifier.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message does not say which file
        raise ValueError(
            f"checkpoint {path}: refused, it holds objects other than tensors and plain containers (checkpoints "
            f"are loaded with weights_only=True, so no code in them runs): {_unsupported(e)}"
        ) from e
    return module.net.eval()


def _unsupported(e: Exception) -> str:
    """The line of torch's weights-only error that names the refused object."""
    lines = [line.strip() for line in str(e).splitlines() if "Unsupported global" in line]
    return lines[0][:300] if lines else str(e).splitlines()[0][:300]


class RegisterBestModel(Callback):
    """At the end of a fit, register the best checkpoint's network (by the checkpoint monitor, val/mAP).

    Arguments:
        name: registry name; default ``<network>-<data source>``.
        alias: alias moved to the new version (default ``best``: the latest best model).
    """

    def __init__(self, name: str | None = None, alias: str = DEFAULT_ALIAS) -> None:
        self.name, self.alias = name, alias
        self.model_uri: str | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero or trainer.interrupted:
            return
        net = pl_module.net
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        if best:
            state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
            net = copy.deepcopy(net).cpu()
            net.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
            logger.experiment.set_tag(logger.run_id, "best_checkpoint", best)
            score = getattr(ckpt, "best_model_score", None)
            if score is not None:
                logger.log_metrics({"best/val_mAP": float(score)})
        dm = trainer.datamodule
        source = getattr(dm, "source", "data")
        image_size = int(getattr(dm, "image_size", 64))
        name = self.name or registered_name(pl_module.net, source)
        self.model_uri = log_network(net, logger.run_id, logger._tracking_uri, name, image_size, self.alias)
        logger.experiment.set_tag(logger.run_id, "registered_model", self.model_uri)
        log.info("registered %s (alias @%s)", self.model_uri, self.alias)
        print(f"Registered model: {self.model_uri}  (also models:/{name}@{self.alias})")
