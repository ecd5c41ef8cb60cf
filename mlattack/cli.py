"""The ``mlattack`` command: one parser that knows every subcommand, so ``mlattack --help`` lists them all and
``--help`` on any of them prints its options and runs nothing.

- ``mlattack fit|validate|test|predict``: LightningCLI over :class:`MultiLabelClassifier` and
  :class:`MultiLabelDataModule`, logging to MLflow (default store: SQLite in ``./mlruns``).
- ``mlattack attack | data stats | demo | report``: :mod:`mlattack.commands`.

Expected mistakes (config, data, model URI or checkpoint, tracking server, bad values) end as one line and exit
code 2 (:mod:`mlattack.errors`); ``--debug`` or ``MLATTACK_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import re
import sys
import time
from argparse import ArgumentError
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import MisconfigurationException

import mlattack
from mlattack.commands import TOOLS, add_data_subcommands
from mlattack.console import HelpFormatter, quiet_output
from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.errors import (
    USER_ERROR_EXIT,
    UserError,
    check_yaml_syntax,
    closest,
    debug_requested,
    is_user_error,
    report_error,
    with_hint,
)
from mlattack.models.module import MultiLabelClassifier
from mlattack.resources import resolve_config_args
from mlattack.tracking.callbacks import (
    LIGHTNING_CKPT_NAMES,
    MLflowRunContext,
    MLflowSaveConfig,
    mlflow_logger,
    resume_run_id,
)
from mlattack.tracking.checkpoints import read_checkpoint
from mlattack.tracking.registry import RegisterBestModel, load_network
from mlattack.tracking.store import (
    EXPERIMENT,
    check_tracking_uri,
    default_artifact_location,
    default_tracking_uri,
)

#: the one-line help of Lightning's subcommands (the Trainer's docstrings are cut mid-sentence)
LIGHTNING_HELP = {
    "fit": "train a model and register it in MLflow",
    "validate": "evaluate a model on the validation split",
    "test": "evaluate a model on the test split",
    "predict": "label probabilities of the test split",
}
#: their longer description, shown by ``mlattack <subcommand> --help``
LIGHTNING_DESCRIPTION = {
    "fit": "Train a model: one MLflow run, checkpoints (best by val mAP, and last for --ckpt_path resume), and the "
    "best network registered as models:/<net>-<data>@best.",
    "validate": "Evaluate a model on the validation split (--ckpt_path: a .ckpt file or a models:/ URI).",
    "test": "Evaluate a model on the test split (--ckpt_path: a .ckpt file or a models:/ URI).",
    "predict": "Label probabilities of the test split (--ckpt_path: a .ckpt file or a models:/ URI).",
}
MODEL_URIS = ("models:/", "runs:/")
#: options that moved, by the key an error names -> where they went
MOVED = {"model.lr": "the learning rate is set in one place: model.optimizer.init_args.lr"}


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


class MLAttackCLI(LightningCLI):
    """LightningCLI with the project's defaults (MLflow logging, best-by-mAP checkpoints, model registration) and
    the subcommands that are not Trainer methods (:data:`mlattack.commands.TOOLS`) in the same parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.result: Any = None  # what a non-Lightning subcommand returned
        super().__init__(*args, **kwargs)

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        self.parser.add_argument(
            "--version",
            action="version",
            version=f"mlattack {mlattack.__version__}",
            help="print the version and exit",
        )
        self.parser.add_argument(
            "--debug", action="store_true", help="show the traceback of an error (also: MLATTACK_DEBUG=1)"
        )

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
        self._subcommand_parsers: dict[str, Any] = {}
        subcommands = parser.add_subcommands()
        for name in self.subcommands():
            sub_kwargs = {"description": LIGHTNING_DESCRIPTION[name], **kwargs.get(name, {})}
            sub = self._prepare_subcommand_parser(self.trainer_class, name, **sub_kwargs)
            self._subcommand_parsers[name] = sub
            subcommands.add_subcommand(name, sub, help=LIGHTNING_HELP[name])
        for name, tool in TOOLS.items():
            sub = tool.build()
            subcommands.add_subcommand(name, sub, help=tool.help)
            if name == "data":  # nested subcommands are added once their parent is in place
                add_data_subcommands(sub)
            self._subcommand_parsers[name] = sub

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
        return self.config.get("subcommand") in TOOLS

    def _set_seed(self) -> None:
        if not self._is_tool():
            super()._set_seed()

    def instantiate_classes(self) -> None:
        if not self._is_tool():
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """Lightning's complaints about Trainer settings (no GPU for accelerator=gpu, a missing package for
        accelerator=tpu, ...) name no option: they are about ``trainer.*``."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, ImportError) as e:
            raise UserError(f"trainer: {e}") from e

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand in TOOLS:
            self.result = TOOLS[subcommand].run(self._subcommand_parsers[subcommand], self.config[subcommand])
        else:
            super()._run_subcommand(subcommand)

    # -- checkpoints: files and registry URIs --------------------------------------------------------------------
    def _parse_ckpt_path(self) -> None:
        """Lightning reads the model's hyperparameters from ``--ckpt_path``; say which file is wrong, and how."""
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub and sub not in TOOLS else None
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

    def _resolve_ckpt_path(self) -> None:
        """A missing file is reported before any work; a ``models:/`` or ``runs:/`` URI loads the registered
        network into the model (the registry holds the bare network, which is what test/validate/predict need)."""
        cfg = self.config[self.subcommand]
        ckpt = cfg.get("ckpt_path")
        if not ckpt or ckpt in LIGHTNING_CKPT_NAMES:
            return
        ckpt = str(ckpt)
        if not ckpt.startswith(MODEL_URIS):
            if not Path(ckpt).is_file():
                raise UserError(
                    f"--ckpt_path: no checkpoint file {ckpt!r}",
                    hint="expected a .ckpt written by `mlattack fit` (outputs/<run>/checkpoints/), "
                    "or a models:/<name>@<alias> URI",
                )
            return
        if self.subcommand == "fit":
            raise UserError(
                f"--ckpt_path: {ckpt} is a registered network, not a training checkpoint; fit resumes "
                "only from a .ckpt file (e.g. outputs/<run>/checkpoints/last.ckpt)"
            )
        logger = mlflow_logger(self.trainer)
        tracking_uri = logger._tracking_uri if logger is not None else default_tracking_uri()
        check_tracking_uri(tracking_uri)
        try:
            net = load_network(ckpt, tracking_uri)
        except ValueError as e:
            raise UserError(f"--ckpt_path: {e}") from e
        self.model.net = net
        self.config_init[self.subcommand]["ckpt_path"] = None

    def _run_name(self) -> str:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        net = str(cfg.model.net.class_path).rsplit(".", 1)[-1].lower()
        return f"{net}-{cfg.data.source}-{self.subcommand or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _prepare_logger(self) -> None:
        logger = mlflow_logger(self.trainer)
        if logger is None:
            return
        check_tracking_uri(logger._tracking_uri)  # a dead server fails here in seconds, before any work
        ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
        if ckpt_path and logger._run_id is None:
            run_id = resume_run_id(ckpt_path, logger._tracking_uri)
            if run_id:  # resume into the run that wrote the checkpoint
                logger.resume(run_id)
        if logger._run_id is None and logger._run_name is None:
            logger._run_name = self._run_name()
        print(f"MLflow run {logger.run_id} in {logger._tracking_uri}")

    def before_fit(self) -> None:
        self._resolve_ckpt_path()
        self._prepare_logger()

    def before_validate(self) -> None:
        self._resolve_ckpt_path()
        self._prepare_logger()

    def before_test(self) -> None:
        self._resolve_ckpt_path()
        self._prepare_logger()

    def before_predict(self) -> None:
        self._resolve_ckpt_path()


def lightning_main(args: list[str] | None = None, run: bool = True) -> MLAttackCLI:
    """Parse ``args`` with the one ``mlattack`` parser and run the subcommand; errors propagate."""
    quiet_output()
    tracking_uri = default_tracking_uri()
    return MLAttackCLI(
        MultiLabelClassifier,
        MultiLabelDataModule,
        save_config_callback=MLflowSaveConfig,
        save_config_kwargs={"save_to_log_dir": False},
        trainer_defaults={
            "logger": {
                "class_path": "mlattack.tracking.logger.MLflowLogger",
                "init_args": {
                    "experiment_name": EXPERIMENT,
                    "tracking_uri": tracking_uri,
                    "artifact_location": default_artifact_location(tracking_uri),
                },
            },
            "default_root_dir": "outputs",
        },
        seed_everything_default=123,
        parser_kwargs={
            "prog": "mlattack",
            "description": "Adversarial attacks that make multi-label image classifiers show many labels.",
            "formatter_class": HelpFormatter,
            "exit_on_error": False,  # main() reports parse errors in the same one-line form as the rest
            "allow_abbrev": False,  # a typo must not silently pick another option
        },
        auto_configure_optimizers=False,  # the model owns its optimiser (model.optimizer): one learning rate
        args=args,
        run=run,
    )


def run(argv: list[str] | None = None) -> Any:
    """Run one ``mlattack`` command and return what it made (the LightningCLI for fit/validate/test/predict, the
    tool's result otherwise); errors propagate. ``configs/...`` paths fall back to the shipped configs."""
    args = resolve_config_args([a for a in (sys.argv[1:] if argv is None else argv) if a != "--debug"])
    check_yaml_syntax(args)
    cli = lightning_main(args)
    return cli.result if cli.subcommand in TOOLS else cli


def main(argv: list[str] | None = None) -> None:
    """The ``mlattack`` entry point: expected errors end as one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or debug_requested()
    try:
        run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("mlattack: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        print(report_error(e, resolve_config_args(args), [*LIGHTNING_HELP, *TOOLS], MOVED), file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT) from None


if __name__ == "__main__":
    main()
