"""``mlattack report``: attack runs -> tables, figures and an index, in a folder and as a "report" MLflow run.

Layout of the output folder::

    index.md                          every table inline, every figure linked
    report.html                       the same, self-contained (figures embedded): what MLflow's viewer shows
    runs.csv                          which MLflow run each row comes from
    tables/success_<net>_<data>.{md,csv,tex}   norms_<net>_<data>.*   cost_<net>_<data>.*   compare_<data>.*
           paired.*   (sign and exact McNemar tests of the study's comparisons on the same samples)
           budget_*.*   grid_*.*   crossover_<net>_<data>.*   labels_*.*
    tables/transfer_<data>.*          source → target model, with the clean-image baseline
    figures/success_<net>_<data>.png  cost_<net>_<data>.png  budget_*.png  grid_*.png  labels_<net>_<data>.png
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow

from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.report.collect import ATTACK_EXPERIMENT, AttackRun, collect_runs, groups, runs_frame
from mlattack.report.crossover import crossover_table
from mlattack.report.html import write_html
from mlattack.report.paired import CAPTION as PAIRED_CAPTION
from mlattack.report.paired import paired_table
from mlattack.report.robustness import robustness_sections
from mlattack.report.sections import Report, Sheet, comparisons, network_section, sweeps
from mlattack.report.tables import (
    network_label,
)
from mlattack.report.transfers import transfer_sections
from mlattack.tracking.store import default_artifact_location, default_tracking_uri, run_tags

REPORT_EXPERIMENT = "mlattack-reports"


def build_report(
    output_dir: str | Path = "outputs/report",
    experiment: str = ATTACK_EXPERIMENT,
    network: str | None = None,
    dataset: str | None = None,
    filter_string: str | None = None,
    tracking_uri: str | None = None,
    report_experiment: str = REPORT_EXPERIMENT,
    data: MultiLabelDataModule | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Report:
    """Collect the matching finished attack runs and write the report (see module docstring)."""
    tracking_uri = tracking_uri or default_tracking_uri()
    client = mlflow.MlflowClient(tracking_uri)
    runs = collect_runs(client, experiment, network, dataset, filter_string, tags, params)
    if not runs:
        raise ValueError(
            f"no finished attack runs in experiment {experiment!r} match network={network!r}, "
            f"dataset={dataset!r}, filter={filter_string!r}"
        )
    out = Path(output_dir)
    report = Report(out, "", runs)
    index = [
        "# Attack report",
        "",
        f"{len(runs)} attack runs from experiment `{experiment}` ({time.strftime('%Y-%m-%d %H:%M')}); "
        "every row's MLflow run is listed in [runs.csv](runs.csv). Success rates in % with their 95 % Wilson "
        "interval [low–high]; N is the number of attacked samples.",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    runs_frame(runs).to_csv(out / "runs.csv", index=False)
    sheet = Sheet(report, index, out / "tables", out / "figures")
    grouped = groups(runs)
    with tempfile.TemporaryDirectory() as tmp:
        for (net, ds), group in grouped.items():
            network_section(sheet, client, net, ds, group, data, tmp)
    comparisons(sheet, client, grouped)
    sweeps(sheet, runs)
    for (net, ds), group in grouped.items():
        if (cross := crossover_table(group)) is not None:
            cap = (
                f"Where the iterative attacks overtake FGSM: {network_label(net)} / {ds} (mean labels shown)"
            )
            sheet.table(cross, f"crossover_{net}_{ds}", f"### {cap}", cap)
    for stem, heading, cap, frame in transfer_sections(
        client, runs
    ):  # `mlattack evaluate` runs of these attacks
        sheet.table(frame, stem, heading, cap)
    with tempfile.TemporaryDirectory() as tmp:
        if (paired := paired_table(client, runs, tmp)) is not None:
            sheet.table(paired, "paired", "## Paired comparisons", PAIRED_CAPTION)
    for stem, heading, cap, frame, fig in robustness_sections(
        client, runs, sheet.fig_dir
    ):  # defended victims
        sheet.table(frame, stem, f"{heading}", cap)
        if fig is not None:
            sheet.figure(fig, stem)
    (out / "index.md").write_text("\n".join(index) + "\n")
    report.files += [out / "index.md", out / "runs.csv", write_html(out, "\n".join(index))]
    report.run_id = _log_report_run(
        client,
        tracking_uri,
        report_experiment,
        out,
        runs,
        {
            "experiment": experiment,
            "network": network or "",
            "dataset": dataset or "",
            "filter": filter_string or "",
        },
    )
    return report


def _log_report_run(
    client, tracking_uri: str, experiment: str, out: Path, runs: list[AttackRun], params: dict[str, str]
) -> str:
    exp = client.get_experiment_by_name(experiment)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(experiment, artifact_location=default_artifact_location(tracking_uri))
    )
    run = client.create_run(exp_id, run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}", tags=run_tags())
    rid = run.info.run_id
    try:
        for k, v in {**params, "num_runs": len(runs)}.items():
            client.log_param(rid, k, str(v)[:500])
        client.log_artifacts(rid, str(out))
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    return rid
