"""``mlattack report``: build the report from the tracking store and print its Markdown tables (the command's parser is
:mod:`mlattack.cli.report`)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import yaml

from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.report.build import REPORT_EXPERIMENT, Report, build_report
from mlattack.tracking.lineage import describe_report_run
from mlattack.tracking.record import ATTACK_EXPERIMENT
from mlattack.tracking.store import check_tracking_uri, default_tracking_uri


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


def make_report(
    output_dir: str = "outputs/report",
    experiment: str = ATTACK_EXPERIMENT,
    network: str | None = None,
    dataset: str | None = None,
    filter: str | None = None,  # noqa: A002 - the command's option name
    tracking_uri: str | None = None,
    report_experiment: str = REPORT_EXPERIMENT,
    data: str | None = None,
) -> Report:
    """Build the report (the options of ``mlattack report``, :mod:`mlattack.cli.report`), print every Markdown table
    and where the files went."""
    tracking_uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)  # like fit and attack: a dead server fails in seconds, not after retries
    report = build_report(
        output_dir=output_dir,
        experiment=experiment,
        network=network,
        dataset=dataset,
        filter_string=filter,
        tracking_uri=tracking_uri,
        report_experiment=report_experiment,
        data=load_data_config(data) if data else None,
    )
    parents: dict[str, list[str]] = {}
    for r in report.runs:  # the attack runs it summarises, by invocation
        parents.setdefault(r.parent_id, []).append(r.attack)
    describe_report_run(mlflow.MlflowClient(tracking_uri), report.run_id, experiment, parents)
    for stem, table in report.markdown.items():
        print(f"\n### {stem}\n\n{table}")
    print(
        f"\nReport: {report.output_dir / 'index.md'} and, figures embedded, {report.output_dir / 'report.html'} "
        f"({len(report.files)} files, {len(report.runs)} attack runs); "
        f"MLflow report run {report.run_id} in experiment {report_experiment!r}"
    )
    return report
