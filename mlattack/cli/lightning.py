"""The LightningCLI behind ``mlattack``: Lightning's fit/validate/test/predict with the project's defaults, and the
subcommands it is handed (:data:`mlattack.cli.tools.TOOLS`) in the same parser.

Defaults: MLflow logging, best-by-mAP checkpoints, registration of the best network, run context tags. Around a
Trainer subcommand it settles what needs no model first (a missing checkpoint, a dead tracking server, the MLflow
run a ``--ckpt_path`` resumes into, a readable run name) by setting the logger's own arguments, then loads a
``models:/`` or ``runs:/`` URI given as ``--ckpt_path`` into the model.
"""

from __future__ import annotations

import importlib
import re
import time
from argparse import ArgumentError
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from mlattack.console import CKPT_HELP, CKPT_HELP_EVAL, LIGHTNING_DESCRIPTION, LIGHTNING_HELP
from mlattack.errors import UserError, closest, device_error, with_hint
from mlattack.quick import add_version_and_debug
from mlattack.tracking.callbacks import (
    LIGHTNING_CKPT_NAMES,
    MLflowRunContext,
    mlflow_logger,
    resume_run_id,
)
from mlattack.tracking.checkpoints import read_checkpoint
from mlattack.tracking.registry import RegisterBestModel, load_network
from mlattack.tracking.resume_lock import hold_resume_lock
from mlattack.tracking.store import check_tracking_uri, default_tracking_uri

if TYPE_CHECKING:
    from mlattack.cli.parsing import RunCommand, Tool

MODEL_URIS = ("models:/", "runs:/")


# Callbacks registered as their own config groups (checkpoint:, registry:, run_context:) so YAML files can
# tune them without repeating the trainer's callback list.
class ModelCheckpointDefaults(ModelCheckpoint):
    """ModelCheckpoint keeping the best validation mAP and the last epoch (for ``--ckpt_path`` resume).

    Args:
        dirpath: checkpoint folder (default: inside the run's folder under ``trainer.default_root_dir``).
        monitor: the metric that picks the best checkpoint.
        mode: whether the best value of ``monitor`` is the largest (max) or smallest (min).
        save_last: also keep ``last.ckpt`` (what ``--ckpt_path`` resumes from).
        save_top_k: how many best checkpoints to keep.
        filename: checkpoint file name pattern.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str = "val/mAP",
        mode: str = "max",
        save_last: bool = True,
        save_top_k: int = 1,
        filename: str = "epoch{epoch:03d}-mAP{val/mAP:.4f}",
    ) -> None:
        super().__init__(
            dirpath=dirpath, monitor=monitor, mode=mode, save_last=save_last, save_top_k=save_top_k,
            filename=filename, auto_insert_metric_name=False,
        )  # fmt: skip


class RegisterBestModelDefaults(RegisterBestModel):
    """At the end of a fit, register the best checkpoint's network in the MLflow model registry."""


class MLflowRunContextDefaults(MLflowRunContext):
    """Run tags (seed, versions, git commit), the data's label statistics, and the run id in checkpoints."""


def mlflow_logger_args(logger: Any) -> Namespace | None:
    """The ``init_args`` of the MLflow logger in a parsed ``trainer.logger`` value (one logger or a list)."""
    for entry in logger if isinstance(logger, list) else [logger]:
        if not isinstance(entry, Namespace) or not entry.get("class_path"):
            continue
        module, _, name = str(entry.class_path).rpartition(".")
        cls = getattr(importlib.import_module(module), name, None)
        if isinstance(cls, type) and issubclass(cls, MLFlowLogger):
            if entry.get("init_args") is None:
                entry.init_args = Namespace()
            return entry.init_args
    return None


class MLAttackCLI(LightningCLI):
    """LightningCLI with the project's defaults and the tools in the same parser (see module docstring).

    ``tools``: the subcommands besides Lightning's; ``rerun``: the ``mlattack`` command, handed to a tool that runs
    other commands (``demo``, ``study``)."""

    def __init__(
        self,
        *args: Any,
        tools: Mapping[str, Tool] | None = None,
        rerun: RunCommand | None = None,
        **kwargs: Any,
    ) -> None:
        self.tools: Mapping[str, Tool] = tools or {}
        self.rerun = rerun
        self.result: Any = None  # what a non-Lightning subcommand returned
        self.tool_parsers: dict[str, Any] = {}
        self.tracking_uri: str | None = None  # the MLflow logger's store (None: no MLflow logger)
        self.resumed_run: str | None = None  # the run a fit checkpoint resumes into
        super().__init__(*args, **kwargs)

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        add_version_and_debug(self.parser)  # the same two options `mlattack --help` shows without this parser

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse; an unknown option gets the closest known one as a hint ("did you mean ...?")."""
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            path, sub = [], parser
            for arg in args or []:  # down the subcommands named in args: "data stats" -> the stats parser
                if sub._subcommands_action is not None and arg in sub._subcommands_action.choices:
                    path, sub = [*path, arg], sub._subcommands_action.choices[arg]
            unknown = re.search(r"(?:option '|unrecognized arguments: --)([\w.]+)", str(e))
            key = unknown.group(1).removeprefix(".".join(path) + ".") if unknown else None
            guess = closest(key, [a.dest for a in sub._actions]) if key else None
            raise with_hint(e, guess and f"did you mean {guess}?") from None

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's subcommands with one-line help of our own, then the mlattack tools."""
        self._subcommand_parsers: dict[str, Any] = {}  # LightningCLI reads its subcommands' parsers here
        subcommands = parser.add_subcommands()
        for name in self.subcommands():
            sub_kwargs = {"description": LIGHTNING_DESCRIPTION[name], **kwargs.get(name, {})}
            sub = self._prepare_subcommand_parser(self.trainer_class, name, **sub_kwargs)
            for action in sub._actions:
                if action.dest == "ckpt_path":
                    action.help = CKPT_HELP.get(name, CKPT_HELP_EVAL)
            self._subcommand_parsers[name] = sub
            subcommands.add_subcommand(name, sub, help=LIGHTNING_HELP[name])
        for name, tool in self.tools.items():
            sub = tool.build()
            subcommands.add_subcommand(name, sub, help=tool.help)
            if tool.subcommands is not None:  # nested subcommands are added once their parent is in place
                tool.subcommands(sub)
            self.tool_parsers[name] = sub

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # the network's label count always follows the data source
        parser.link_arguments("data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate")
        # ...and so does the dataset name (ML-GCN picks its shipped label embeddings by it)
        parser.link_arguments("data.source", "model.net.init_args.dataset")
        parser.add_lightning_class_args(ModelCheckpointDefaults, "checkpoint")
        parser.add_lightning_class_args(RegisterBestModelDefaults, "registry")
        parser.add_lightning_class_args(MLflowRunContextDefaults, "run_context")
        parser.link_arguments("seed_everything", "run_context.seed")

    # -- the tools skip the Trainer's set-up ---------------------------------------------------------------------
    def _is_tool(self) -> bool:
        return self.config.get("subcommand") in self.tools

    def _set_seed(self) -> None:
        if not self._is_tool():
            super()._set_seed()

    def before_instantiate_classes(self) -> None:
        if (
            self.config.get("subcommand") is not None and not self._is_tool()
        ):  # not for run=False (no subcommand)
            self._check_ckpt_path()
            self._settle_mlflow_run()

    def instantiate_classes(self) -> None:
        if not self._is_tool():
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """Lightning's complaints about Trainer settings (no GPU for accelerator=gpu, a missing package for
        accelerator=tpu, ...) name no option: they are about ``trainer.*``."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, ImportError) as e:
            accelerator = self.config_init[self.subcommand].trainer.get("accelerator")
            if isinstance(accelerator, str) and accelerator not in ("cpu", "auto") and "backend" in str(e):
                raise device_error("--trainer.accelerator", accelerator, e) from e
            raise UserError(f"trainer: {e}") from e

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand in self.tools:
            if self.rerun is None:
                raise RuntimeError("MLAttackCLI runs a tool only when handed the mlattack command (rerun=)")
            tool = self.tools[subcommand]
            self.result = tool.run(self.tool_parsers[subcommand], self.config[subcommand], self.rerun)
        else:
            super()._run_subcommand(subcommand)

    # -- before any class is built: checkpoint file, tracking store, MLflow run ---------------------------------
    def _parse_ckpt_path(self) -> None:
        """Lightning reads the model's hyperparameters from ``--ckpt_path``; say which file is wrong, and how."""
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub and sub not in self.tools else None
        if path and str(path) not in LIGHTNING_CKPT_NAMES and Path(str(path)).is_file():
            read_checkpoint(
                path
            )  # empty, truncated, not a checkpoint, a refused payload: named with the file
        try:
            super()._parse_ckpt_path()
        except Exception as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
            raise UserError(
                f"--ckpt_path: {path}: its hyperparameters do not fit this version's options ({lines[0][:300]})",
                hint="give a .ckpt written by this version of `mlattack fit`, or a models:/<name>@<alias> URI",
            ) from e

    def _ckpt_path(self) -> str | None:
        """``--ckpt_path`` when it names a file or URI (not Lightning's "last"/"best"/...)."""
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        return str(ckpt) if ckpt and str(ckpt) not in LIGHTNING_CKPT_NAMES else None

    def _check_ckpt_path(self) -> None:
        """A missing file, or a registered network given to fit, is reported before any work."""
        ckpt = self._ckpt_path()
        if ckpt is None:
            return
        if ckpt.startswith(MODEL_URIS):
            if self.config.subcommand == "fit":
                raise UserError(
                    f"--ckpt_path: {ckpt} is a registered network, not a training checkpoint; fit resumes "
                    "only from a .ckpt file (e.g. outputs/<run>/checkpoints/last.ckpt)"
                )
        elif not Path(ckpt).is_file():
            raise UserError(
                f"--ckpt_path: no checkpoint file {ckpt!r}",
                hint="expected a .ckpt written by `mlattack fit` (outputs/<run>/checkpoints/), "
                "or a models:/<name>@<alias> URI",
            )

    def _settle_mlflow_run(self) -> None:
        """Check the MLflow logger's store (a dead server fails here in seconds) and choose its run through the
        logger's own arguments: the run a ``.ckpt`` was written by (resumed), else a new run with a readable name."""
        sub = self.config.subcommand
        init = mlflow_logger_args(self.config[sub].trainer.get("logger"))
        if init is None:
            return
        self.tracking_uri = init.get("tracking_uri") or f"file:{init.get('save_dir') or './mlruns'}"
        check_tracking_uri(self.tracking_uri)
        if sub == "predict":
            return
        ckpt = self._ckpt_path()
        if ckpt and not ckpt.startswith(MODEL_URIS) and not init.get("run_id"):
            init.run_id = self.resumed_run = resume_run_id(ckpt, self.tracking_uri)
        if not init.get("run_id") and not init.get("run_name"):
            cfg = self.config[sub]
            net = str(cfg.model.net.class_path).rsplit(".", 1)[-1].lower()
            init.run_name = f"{net}-{cfg.data.source}-{sub}-{time.strftime('%Y%m%d-%H%M%S')}"

    # -- after: a registered network as --ckpt_path, the run announced -------------------------------------------
    def _load_registered_network(self) -> None:
        """A ``models:/`` or ``runs:/`` URI loads the registered network into the model (the registry holds the
        bare network, which is what test/validate/predict need); Lightning then gets no checkpoint to restore."""
        ckpt = self._ckpt_path()
        if ckpt is None or not ckpt.startswith(MODEL_URIS):
            return
        tracking_uri = self.tracking_uri or default_tracking_uri()
        check_tracking_uri(tracking_uri)
        try:
            self.model.net = load_network(ckpt, tracking_uri)
        except ValueError as e:
            raise UserError(f"--ckpt_path: {e}", hint=getattr(e, "hint", None)) from e
        self.config_init[self.subcommand]["ckpt_path"] = None

    def _announce_run(self) -> None:
        logger = mlflow_logger(self.trainer)
        if logger is None:
            return
        if self.resumed_run:  # the run a checkpoint resumes is shown as running again
            logger.experiment.update_run(logger.run_id, status="RUNNING")
        print(f"MLflow run {logger.run_id} in {logger.experiment.tracking_uri}")

    def before_fit(self) -> None:
        hold_resume_lock(self.trainer, self._ckpt_path(), self.resumed_run)
        self._announce_run()

    def before_validate(self) -> None:
        self._load_registered_network()
        self._announce_run()

    def before_test(self) -> None:
        self._load_registered_network()
        self._announce_run()

    def before_predict(self) -> None:
        self._load_registered_network()
