"""Lightning callbacks that carry the MLflow side of a run, so model and attack code never talk to MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from mlattack.data.base import dataset_digest
from mlattack.tracking.checkpoints import CheckpointError, read_checkpoint
from mlattack.tracking.lineage import all_tags, log_training_input, training_dataset
from mlattack.tracking.record import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from mlattack.tracking.rng import rng_states, set_rng_states

log = logging.getLogger(__name__)

RUN_ID_KEY = "mlflow_run_id"


def mlflow_logger(trainer: pl.Trainer) -> MLFlowLogger | None:
    """The trainer's MLFlowLogger, if it has one."""
    for lg in trainer.loggers:
        if isinstance(lg, MLFlowLogger):
            return lg
    return None


def trainer_params(trainer: pl.Trainer) -> dict[str, object]:
    """The Trainer settings that shape a fit, as ``trainer/...`` params (public Trainer attributes only)."""
    values = {
        "max_epochs": trainer.max_epochs, "min_epochs": trainer.min_epochs, "precision": trainer.precision,
        "accelerator": type(trainer.accelerator).__name__, "devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes, "strategy": type(trainer.strategy).__name__,
        "accumulate_grad_batches": trainer.accumulate_grad_batches, "gradient_clip_val": trainer.gradient_clip_val,
        "check_val_every_n_epoch": trainer.check_val_every_n_epoch, "log_every_n_steps": trainer.log_every_n_steps,
        "limit_train_batches": trainer.limit_train_batches, "limit_val_batches": trainer.limit_val_batches,
    }  # fmt: skip
    return {f"trainer/{k}": v for k, v in values.items()}


class MLflowRunContext(Callback):
    """MLflow's source tags (command, git commit, user), versions and seed, the Trainer settings and the data's
    label statistics as params, the training split as the run's input, and the run id in checkpoints.

    The run id stored in every checkpoint is what lets ``--ckpt_path`` resume into the *same* MLflow run; the
    random generators' states stored beside it (:mod:`mlattack.tracking.rng`) make the resumed fit draw what an
    uninterrupted one would have drawn, so a fit killed and resumed ends with the same weights.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._done = False

    @rank_zero_only
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or self._done:
            return
        self._done = True
        client, run_id = logger.experiment, logger.run_id
        stage = str(getattr(stage, "value", stage))
        for k, v in {**all_tags(self.seed, f"mlattack {stage}"), "mlattack.stage": stage}.items():
            client.set_tag(run_id, k, v)
        # the UI shows the experiment as a runs table (not a GenAI overview)
        if EXPERIMENT_KIND_TAG not in client.get_experiment(logger.experiment_id).tags:
            client.set_experiment_tag(logger.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        params = trainer_params(trainer)
        dm = trainer.datamodule
        if dm is not None and hasattr(dm, "label_stats"):
            params.update(dm.label_stats("train").as_params("data/train"))
            params.update(dm.label_stats("test").as_params("data/test"))
        logger.log_hyperparams({k.replace(".", "/"): v for k, v in params.items()})
        if (
            stage == "fit" and dm is not None and hasattr(dm, "dataset")
        ):  # the training split as the run's input
            train = dm.dataset("train")
            data = training_dataset(f"{dm.source}/train", dataset_digest(train), dm.root, dm.image_size,
                                    dm.num_classes)  # fmt: skip
            log_training_input(client, run_id, data)

    def state_dict(self) -> dict:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        logger = mlflow_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            checkpoint[RUN_ID_KEY] = logger.run_id


class MLflowSaveConfig(SaveConfigCallback):
    """Log the fully resolved LightningCLI config as ``config.yaml`` in the run (and keep Lightning's local copy)."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        text = self.parser.dump(self.config, skip_none=False)
        logger.experiment.log_text(logger.run_id, text, "config.yaml")


#: ``--ckpt_path`` values Lightning resolves itself (no file to check here)
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def resume_run_id(ckpt_path: str | Path | None, tracking_uri: str) -> str | None:
    """Check ``fit --ckpt_path`` before any MLflow run exists and return the run it resumes into (None: a new run).

    A missing, empty, truncated or foreign file fails here with an error that says what it is, so no run is left
    FAILED behind it; a checkpoint whose run is not in this tracking store (written against another store) fails
    naming the run, the store and what to do.
    """
    if ckpt_path is None or str(ckpt_path) in LIGHTNING_CKPT_NAMES:
        return None
    run_id = read_checkpoint(ckpt_path).get(RUN_ID_KEY)
    if not run_id:
        return None
    import mlflow

    try:
        mlflow.MlflowClient(tracking_uri).get_run(str(run_id))
    except mlflow.exceptions.MlflowException as e:
        raise CheckpointError(
            f"checkpoint {ckpt_path} was written by MLflow run {run_id}, which tracking store {tracking_uri} does not "
            "hold (a checkpoint from another store, or its run was deleted). Resume against the store it came "
            "from (MLFLOW_TRACKING_URI), or start a new run from its weights without --ckpt_path."
        ) from e
    return str(run_id)
