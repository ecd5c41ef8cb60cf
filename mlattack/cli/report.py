"""``mlattack report`` and ``mlattack evaluate``: their parsers, and runners that hand the parsed values to
:func:`mlattack.report.command.make_report` and :func:`mlattack.evaluation.transfer.evaluate_transfer`."""

from __future__ import annotations

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from mlattack.cli.parsing import RunCommand


def _values(cfg: Namespace) -> dict:
    return {k: v for k, v in cfg.as_dict().items() if k not in ("config", "__path__")}


def report_parser() -> ArgumentParser:
    from mlattack.report.build import REPORT_EXPERIMENT
    from mlattack.tracking.record import ATTACK_EXPERIMENT

    parser = ArgumentParser(
        prog="mlattack report",
        description="Tables and figures of the study from finished `mlattack attack` runs.",
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument(
        "--experiment", type=str, default=ATTACK_EXPERIMENT, help="experiment of the attack runs"
    )
    parser.add_argument(
        "--network", type=str | None, default=None, help="only this network (e.g. mlgcn, mlliw)"
    )
    parser.add_argument(
        "--dataset", type=str | None, default=None, help="only this data source (e.g. voc2007)"
    )
    parser.add_argument(
        "--filter",
        type=str | None,
        default=None,
        help="extra MLflow filter on the attack runs, e.g. \"params.mode = 'paper'\"",
    )
    parser.add_argument(
        "--output_dir", type=str, default="outputs/report", help="folder for tables and figures"
    )
    parser.add_argument(
        "--tracking_uri", type=str | None, default=None, help="default: $MLFLOW_TRACKING_URI or ./mlruns"
    )
    parser.add_argument(
        "--report_experiment",
        type=str,
        default=REPORT_EXPERIMENT,
        help="experiment of the report run that stores the files as artifacts",
    )
    parser.add_argument(
        "--data",
        type=str | None,
        default=None,
        help="a data YAML (e.g. configs/data/voc2007.yaml, with its root) for the training-split "
        "label statistics; the built-in dataset needs none",
    )
    return parser


def run_report(parser: ArgumentParser, cfg: Namespace, run: RunCommand):
    from mlattack.report.command import make_report

    return make_report(**_values(cfg))


def evaluate_parser() -> ArgumentParser:
    from mlattack.evaluation.transfer import HELP
    from mlattack.tracking.record import TRANSFER_EXPERIMENT

    parser = ArgumentParser(prog="mlattack evaluate", description=HELP[0].upper() + HELP[1:] + ".")
    parser.add_argument("--run", type=str, required=True,
                        help="an `mlattack attack` parent run id (all its attacks) or one attack's run id")  # fmt: skip
    parser.add_argument("--model", type=str, required=True,
                        help="the model to judge them on: models:/<name>@<alias>, models:/<name>/<version> or a .ckpt")  # fmt: skip
    parser.add_argument("--tracking_uri", type=str | None, default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the SQLite store in ./mlruns)")  # fmt: skip
    parser.add_argument(
        "--experiment", type=str, default=TRANSFER_EXPERIMENT, help="experiment of the new run"
    )
    parser.add_argument("--batch_size", type=int, default=50, help="images per forward pass")
    parser.add_argument(
        "--device", type=str, default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ..."
    )
    return parser


def run_evaluate(parser: ArgumentParser, cfg: Namespace, run: RunCommand):
    """Run ``mlattack evaluate`` with parsed options and print its table."""
    from mlattack.evaluation.transfer import evaluate_transfer

    report = evaluate_transfer(**_values(cfg))
    print(report.table)
    print(f"\nMLflow transfer run: {report.run_id} ({len(report.child_run_ids)} attacks)")
    return report
