"""``mlattack demo`` and ``mlattack study``: commands that run other ``mlattack`` commands, through the ``run``
they are handed."""

from __future__ import annotations

import time

from jsonargparse import ArgumentParser, Namespace

from mlattack.cli.parsing import RunCommand
from mlattack.resources import config_dir


def demo_parser() -> ArgumentParser:
    parser = ArgumentParser(
        description="The end-to-end demo on the built-in dataset: train ML-GCN and register "
        "it (configs/demo.yaml), then attack it with all nine attacks (configs/attack-demo.yaml)."
    )
    parser.add_argument(
        "--max_epochs",
        type=int | None,
        default=None,
        help="epochs of the training stage (default: configs/demo.yaml's)",
    )
    parser.add_argument(
        "--num_samples",
        type=int | None,
        default=None,
        help="samples attacked (default: configs/attack-demo.yaml's)",
    )
    parser.add_argument(
        "--accelerator", type=str, default="auto", help="Lightning accelerator of both stages"
    )
    return parser


def run_demo(parser: ArgumentParser, cfg: Namespace, run: RunCommand) -> None:
    """Train + register the demo model on the built-in dataset, then attack it with all nine attacks."""
    from mlattack.tracking.callbacks import mlflow_logger
    from mlattack.tracking.registry import RegisterBestModel
    from mlattack.tracking.store import default_tracking_uri, mlflow_ui_command

    configs, start = config_dir(), time.time()
    print("== mlattack demo: built-in dataset ==")
    run(["data", "stats", "--data", str(configs / "data" / "synthetic.yaml"), "--split", "train"])
    fit = ["fit", "--config", str(configs / "demo.yaml"), "--trainer.accelerator", cfg.accelerator]
    fit += ["--trainer.max_epochs", str(cfg.max_epochs)] if cfg.max_epochs is not None else []
    cli = run(fit)
    reg = next((c for c in cli.trainer.callbacks if isinstance(c, RegisterBestModel)), None)
    if reg is None or reg.model_uri is None:
        raise RuntimeError("the demo model was not registered; see the log above")
    fit_seconds = time.time() - start
    print(f"\nTrained and registered {reg.model_uri} in {fit_seconds:.0f} s; attacking it with nine attacks.")
    attack = [
        "attack",
        "--config",
        str(configs / "attack-demo.yaml"),
        "--model",
        reg.model_uri,
        "--accelerator",
        cfg.accelerator,
    ]
    attack += ["--num_samples", str(cfg.num_samples)] if cfg.num_samples is not None else []
    report = run(attack)
    print(f"\nDemo finished in {time.time() - start:.0f} s (fit {fit_seconds:.0f} s).")
    print(f"Fit run: {mlflow_logger(cli.trainer).run_id}   Attack run: {report.parent_run_id}")
    print(f"Model: {reg.model_uri}  (alias: models:/{reg.model_uri.split('/')[1]}@best)")
    uri = default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"See the runs:  {uri}")
    else:
        print(f"See the runs:  {mlflow_ui_command(uri)}  -> http://127.0.0.1:5000")


def study_parser() -> ArgumentParser:
    from mlattack.study import study_parser as build

    return build()


def run_study(parser: ArgumentParser, cfg: Namespace, run: RunCommand):
    from mlattack.study import run_study as study

    return study(cfg, run)
