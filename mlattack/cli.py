"""The ``mlattack`` command.

- ``mlattack fit|validate|test|predict``: LightningCLI over :class:`MultiLabelClassifier` and
  :class:`MultiLabelDataModule`, logging to MLflow (default store: SQLite in ``./mlruns``).
- ``mlattack attack``: the study's "show many labels" protocol on a trained model (:mod:`mlattack.evaluation`).
- ``mlattack data stats``: label statistics of a data source as a table.
- ``mlattack demo``: the end-to-end job on the built-in dataset (what ``make demo`` runs).
- ``mlattack report``: the study's tables and figures from finished attack runs (:mod:`mlattack.report`).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.evaluation.runner import AttackReport
from mlattack.models.module import MultiLabelClassifier
from mlattack.models.registry import RegisterBestModel
from mlattack.resources import config_dir
from mlattack.tracking.callbacks import RUN_ID_KEY, MLflowRunContext, MLflowSaveConfig, mlflow_logger
from mlattack.tracking.store import (
    EXPERIMENT,
    check_tracking_uri,
    default_artifact_location,
    default_tracking_uri,
)

CONFIG_DIR = config_dir()


# Callbacks registered as their own config groups (checkpoint:, registry:, run_context:) so YAML files can
# tune them without repeating the trainer's callback list.
class ModelCheckpointDefaults(ModelCheckpoint):
    """ModelCheckpoint keeping the best validation mAP and the last epoch (for ``--ckpt_path`` resume)."""

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
        )


class RegisterBestModelDefaults(RegisterBestModel):
    """See :class:`mlattack.models.registry.RegisterBestModel`."""


class MLflowRunContextDefaults(MLflowRunContext):
    """See :class:`mlattack.tracking.callbacks.MLflowRunContext`."""


class MLAttackCLI(LightningCLI):
    """LightningCLI with the project's defaults: MLflow logging, best-by-mAP checkpoints, model registration."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # the network's label count always follows the data source
        parser.link_arguments("data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate")
        # ...and so does the dataset name (ML-GCN picks its shipped label embeddings by it)
        parser.link_arguments("data.source", "model.net.init_args.dataset")
        parser.add_lightning_class_args(ModelCheckpointDefaults, "checkpoint")
        parser.add_lightning_class_args(RegisterBestModelDefaults, "registry")
        parser.add_lightning_class_args(MLflowRunContextDefaults, "run_context")
        parser.link_arguments("seed_everything", "run_context.seed")

    def _run_name(self) -> str:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        net = str(cfg.model.net.class_path).rsplit(".", 1)[-1].lower()
        return f"{net}-{cfg.data.source}-{self.subcommand or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _prepare_logger(self) -> None:
        logger = mlflow_logger(self.trainer)
        if logger is None:
            return
        check_tracking_uri(logger._tracking_uri)  # a dead server fails here in seconds, before any work
        cfg = self.config[self.subcommand]
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path and Path(str(ckpt_path)).is_file() and logger._run_id is None:
            ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
            run_id = ckpt.get(RUN_ID_KEY)
            if run_id:  # resume into the run that wrote the checkpoint
                logger._run_id = run_id
                logger.experiment.update_run(run_id, status="RUNNING")
        if logger._run_id is None and logger._run_name is None:
            logger._run_name = self._run_name()
        print(f"MLflow run {logger.run_id} in {logger._tracking_uri}")

    def before_fit(self) -> None:
        self._prepare_logger()

    def before_validate(self) -> None:
        self._prepare_logger()

    def before_test(self) -> None:
        self._prepare_logger()


def lightning_main(args: list[str] | None = None, run: bool = True) -> MLAttackCLI:
    """Run a Lightning subcommand (fit/validate/test/predict) with the project's defaults."""
    tracking_uri = default_tracking_uri()
    # `mlattack demo` passes explicit args while sys.argv holds "demo": that is intended, not a mistake
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    return MLAttackCLI(
        MultiLabelClassifier,
        MultiLabelDataModule,
        save_config_callback=MLflowSaveConfig,
        save_config_kwargs={"save_to_log_dir": False},
        trainer_defaults={
            "logger": {
                "class_path": "pytorch_lightning.loggers.MLFlowLogger",
                "init_args": {
                    "experiment_name": EXPERIMENT,
                    "tracking_uri": tracking_uri,
                    "artifact_location": default_artifact_location(tracking_uri),
                },
            },
            "default_root_dir": "outputs",
        },
        seed_everything_default=123,
        args=args,
        run=run,
    )


def data_stats(argv: list[str]) -> None:
    """``mlattack data stats --data configs/data/<source>.yaml [--split test]``."""
    parser = ArgumentParser(prog="mlattack data stats", description="Label statistics of one split.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(MultiLabelDataModule, "data")
    parser.add_argument("--split", type=str, default="all", help="train, val, test or all")
    cfg = parser.parse_args(argv)
    dm = parser.instantiate_classes(cfg).data
    splits = ("train", "val", "test") if cfg.split == "all" else (cfg.split,)
    for split in splits:
        print(f"\n## {dm.source} / {split}\n")
        print(dm.label_stats(split).table())


def demo(argv: list[str]) -> None:
    """The README's main job: train + register the demo model on the built-in dataset, then attack it with all
    nine attacks and print the success table. Extra arguments go to the fit stage (e.g. ``--trainer.max_epochs``)."""
    start = time.time()
    print("== mlattack demo: built-in dataset ==")
    data_stats(["--data", str(CONFIG_DIR / "data" / "synthetic.yaml"), "--split", "train"])
    cli = lightning_main(["fit", "--config", str(CONFIG_DIR / "demo.yaml"), *argv])
    reg = next((c for c in cli.trainer.callbacks if isinstance(c, RegisterBestModel)), None)
    if reg is None or reg.model_uri is None:
        raise RuntimeError("the demo model was not registered; see the log above")
    fit_seconds = time.time() - start
    print(f"\nTrained and registered {reg.model_uri} in {fit_seconds:.0f} s; attacking it with nine attacks.")
    report = attack(["--config", str(CONFIG_DIR / "attack-demo.yaml"), "--model", reg.model_uri])
    print(f"\nDemo finished in {time.time() - start:.0f} s (fit {fit_seconds:.0f} s).")
    print(f"Fit run: {mlflow_logger(cli.trainer).run_id}   Attack run: {report.parent_run_id}")
    print(f"Model: {reg.model_uri}  (alias: models:/{reg.model_uri.split('/')[1]}@best)")
    uri = default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"See the runs:  {uri}")
    else:
        print(f"See the runs:  .venv/bin/mlflow ui --backend-store-uri {uri}  -> http://127.0.0.1:5000")


def attack(argv: list[str]) -> AttackReport:
    """``mlattack attack --config configs/attack-demo.yaml --model models:/<name>@best``."""
    from mlattack.evaluation.runner import AttackSpec, run_attacks

    parser = ArgumentParser(prog="mlattack attack", description="Show-many-labels attacks on a trained model.")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(MultiLabelDataModule, "data")
    parser.add_argument("--attacks", type=list[AttackSpec], required=True)
    parser.add_function_arguments(run_attacks, skip={"data", "attacks", "progress_bar", "callbacks"})
    cfg = parser.parse_args(argv)
    init = parser.instantiate_classes(cfg)
    kwargs = {k: v for k, v in init.as_dict().items() if k not in ("config", "__path__")}
    kwargs["data"] = init.data
    report = run_attacks(**kwargs)
    if report.table:  # DDP ranks > 0 return an empty table: rank 0 prints
        print_report(report)
    return report


def print_report(report: AttackReport) -> None:
    """The success table (attacks x scenarios) in the study's layout, and where to find the runs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Success rate (%) - showing many labels (N={report.num_selected}, "
                        f"avgLabels={report.avg_labels:.2f})")
    table.add_column("attack")
    for k in range(8):
        table.add_column(f"n={k}", justify="right")
    table.add_column("labels shown", justify="right")
    table.add_column("L2", justify="right")
    for name, m in report.metrics.items():
        table.add_row(name, *[f"{100 * m[f'success_rate_n{k}']:.1f}" for k in range(8)],
                      f"{m['labels_shown_mean']:.2f}", f"{m['l2_mean']:.3f}")
    Console(width=max(Console().width, 130)).print(table)
    print(f"MLflow parent run: {report.parent_run_id} ({len(report.child_run_ids)} attack runs)")


def report(argv: list[str]) -> None:
    """``mlattack report [--network mlgcn] [--dataset voc2007] [--filter "..."] [--output_dir outputs/report]``."""
    from mlattack.report.command import main as report_main

    report_main(argv)


COMMANDS = {"demo": demo, "attack": attack, "report": report}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:2] == ["data", "stats"]:
        return data_stats(args[2:])
    if args and args[0] in COMMANDS:
        COMMANDS[args[0]](args[1:])
        return
    lightning_main(argv)


if __name__ == "__main__":
    main()
