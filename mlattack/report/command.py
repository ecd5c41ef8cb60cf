"""``mlattack report``: build the report from the tracking store and print its Markdown tables."""

from __future__ import annotations

from pathlib import Path

import mlflow
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.report.build import REPORT_EXPERIMENT, Report, build_report
from mlattack.tracking.lineage import describe_report_run
from mlattack.tracking.record import ATTACK_EXPERIMENT
from mlattack.tracking.store import check_tracking_uri, default_tracking_uri


def report_parser() -> ArgumentParser:
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


def load_data_config(path: str) -> MultiLabelDataModule:
    """A datamodule from one of the ``configs/data/*.yaml`` files (plain init arguments)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--data: no file {path!r}")
    spec = yaml.safe_load(p.read_text())
    if not isinstance(spec, dict) or "source" not in spec:
        raise ValueError(f"{p}: expected a mapping of data-module arguments with `source`")
    try:
        return MultiLabelDataModule(**spec)
    except TypeError as e:
        raise ValueError(f"{p}: {e}") from e


def main(argv: list[str]) -> Report:
    """Parse ``argv``, build the report, print every Markdown table and where the files went."""
    parser = report_parser()
    cfg = parser.parse_args(argv)
    tracking_uri = cfg.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)  # like fit and attack: a dead server fails in seconds, not after retries
    report = build_report(
        output_dir=cfg.output_dir,
        experiment=cfg.experiment,
        network=cfg.network,
        dataset=cfg.dataset,
        filter_string=cfg.filter,
        tracking_uri=tracking_uri,
        report_experiment=cfg.report_experiment,
        data=load_data_config(cfg.data) if cfg.data else None,
    )
    parents: dict[str, list[str]] = {}
    for r in report.runs:  # the attack runs it summarises, by invocation
        parents.setdefault(r.parent_id, []).append(r.attack)
    describe_report_run(mlflow.MlflowClient(tracking_uri), report.run_id, cfg.experiment, parents)
    for stem, table in report.markdown.items():
        print(f"\n### {stem}\n\n{table}")
    print(
        f"\nReport: {report.output_dir / 'index.md'} and, figures embedded, {report.output_dir / 'report.html'} "
        f"({len(report.files)} files, {len(report.runs)} attack runs); "
        f"MLflow report run {report.run_id} in experiment {cfg.report_experiment!r}"
    )
    return report
