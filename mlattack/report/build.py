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
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np

from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.report import plots
from mlattack.report.architectures import architecture_map, architecture_table, clean_maps, shown_vs_size
from mlattack.report.collect import ATTACK_EXPERIMENT, AttackRun, collect_runs, groups, runs_frame
from mlattack.report.costs import cost_section
from mlattack.report.crossover import crossover_table
from mlattack.report.grids import grid_heatmaps, sensitivity_grids
from mlattack.report.html import write_html
from mlattack.report.labels import label_section
from mlattack.report.paired import CAPTION as PAIRED_CAPTION
from mlattack.report.paired import paired_table
from mlattack.report.robustness import robustness_sections
from mlattack.report.sweeps import budget_curves
from mlattack.report.tables import (
    comparison_table,
    n_text,
    network_label,
    norm_by_scenario_table,
    norms_table,
    sample_count,
    success_table,
    to_markdown,
    write_table,
)
from mlattack.report.transfers import transfer_sections
from mlattack.scenarios import exp_labels
from mlattack.tracking.store import default_artifact_location, default_tracking_uri, run_tags

REPORT_EXPERIMENT = "mlattack-reports"


@dataclass
class Report:
    """What :func:`build_report` made: the folder, the report run, and the Markdown of every table."""

    output_dir: Path
    run_id: str
    runs: list[AttackRun]
    markdown: dict[str, str] = field(default_factory=dict)  # stem -> Markdown table (as printed)
    files: list[Path] = field(default_factory=list)


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
    tables_dir, fig_dir = out / "tables", out / "figures"
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

    grouped = groups(runs)
    with tempfile.TemporaryDirectory() as tmp:
        for (net, ds), group in grouped.items():
            title = f"{network_label(net)} on {ds}"
            c = next((r.num_classes for r in group if r.num_classes), None)
            avg = float(np.median([r.avg_labels for r in group]))
            exp = exp_labels(avg, c) if c else None
            caption = (
                f"Success rate (%) [95 % Wilson interval] and mean labels shown, {title}: {sample_count(group)}, "
                f"avgLabels = {avg:.3f}"
                + (f", C = {c}, expLabels = " + ", ".join(f"{e:.2f}" for e in exp) if exp else "")
            )
            table = success_table(group)
            paths = write_table(table, tables_dir, f"success_{net}_{ds}", caption)
            _add(report, index, paths, f"## {title}", caption, table, sorted({r.model_uri for r in group}))
            fig = plots.success_vs_n(
                table,
                f"Showing many labels: {title} ({sample_count(group)}; bars: 95 % Wilson)",
                fig_dir / f"success_{net}_{ds}.png",
                exp,
            )
            report.files.append(fig)
            index += [f"![success vs n, {title}](figures/{fig.name})", ""]
            extra = (  # (file stem, heading, caption, frame)
                ("norms", "### Perturbation size", f"Mean perturbation per attack, {title} (L2 and L∞ on [0,1] "
                 "pixels, RMSD on the 0-255 scale)", norms_table(group)),
                ("l2_success", "### L2 over successful samples", f"Mean L2 over the samples that succeeded in "
                 f"each scenario, {title} (the study's averaging)", norm_by_scenario_table(group, "l2")),
            )  # fmt: skip
            for stem, heading, cap, frame in extra:
                _add(
                    report,
                    index,
                    write_table(frame, tables_dir, f"{stem}_{net}_{ds}", cap),
                    heading,
                    cap,
                    frame,
                )
            if cost := cost_section(group, title, fig_dir / f"cost_{net}_{ds}.png"):
                frame, cap, fig = cost
                paths = write_table(frame, tables_dir, f"cost_{net}_{ds}", cap)
                _add(report, index, paths, "### Cost", cap, frame)
                report.files.append(fig)
                index += [f"![success vs cost, {title}](figures/{fig.name})", ""]
            label_section(report, index, client, group, net, ds, data, tmp, tables_dir, fig_dir)

    by_dataset: dict[str, dict[str, list[AttackRun]]] = {}
    for (net, ds), group in grouped.items():
        by_dataset.setdefault(ds, {})[net] = group
    for ds, nets in by_dataset.items():
        if len(nets) < 2:
            continue
        comp = comparison_table(nets)
        cap = f"Success rate (%) [95 % Wilson interval] on {ds}: " + " vs ".join(
            f"{network_label(n)} ({sample_count(g)})" for n, g in nets.items()
        )
        _add(
            report,
            index,
            write_table(comp, tables_dir, f"compare_{ds}", cap),
            f"## Model comparison: {ds}",
            cap,
            comp,
        )
        _architectures(report, index, client, nets, ds, tables_dir, fig_dir)

    curves = budget_curves(runs)
    if curves:
        index += ["## Budget sweeps", ""]
    for curve in curves:
        title = (
            f"{curve.attack} on {network_label(curve.network)} / {curve.dataset}: success vs {curve.param} "
            f"({n_text(curve.table['N'])}, band: 95 % Wilson)"
        )
        frame = curve.table.drop(columns=["run_id"])
        _add(report, index, write_table(frame, tables_dir, curve.stem, title), f"### {title}", title, frame)
        fig = plots.success_vs_budget(frame, curve.param, title, fig_dir / f"{curve.stem}.png")
        report.files.append(fig)
        index += [f"![{title}](figures/{fig.name})", ""]

    for grid in sensitivity_grids(runs):
        title = (
            f"{grid.attack} on {network_label(grid.network)} / {grid.dataset}: grid over {' x '.join(grid.params)} "
            f"({n_text(grid.table['N'])} per point; intervals in the table)"
        )
        frame = grid.points()
        _add(report, index, write_table(frame, tables_dir, grid.stem, title), f"### {title}", title, frame)
        fig = grid_heatmaps(grid, title, fig_dir / f"{grid.stem}.png")
        report.files.append(fig)
        index += [f"![{title}](figures/{fig.name})", ""]
    for (net, ds), group in grouped.items():
        if (cross := crossover_table(group)) is not None:
            cap = (
                f"Where the iterative attacks overtake FGSM: {network_label(net)} / {ds} (mean labels shown)"
            )
            paths = write_table(cross, tables_dir, f"crossover_{net}_{ds}", cap)
            _add(report, index, paths, f"### {cap}", cap, cross)

    for stem, heading, cap, frame in transfer_sections(
        client, runs
    ):  # `mlattack evaluate` runs of these attacks
        _add(report, index, write_table(frame, tables_dir, stem, cap), heading, cap, frame)

    with tempfile.TemporaryDirectory() as tmp:
        if (paired := paired_table(client, runs, tmp)) is not None:
            paths = write_table(paired, tables_dir, "paired", PAIRED_CAPTION)
            _add(report, index, paths, "## Paired comparisons", PAIRED_CAPTION, paired)

    for stem, heading, cap, frame, fig in robustness_sections(
        client, runs, fig_dir
    ):  # defended/trained victims
        _add(report, index, write_table(frame, tables_dir, stem, cap), f"{heading}", cap, frame)
        if fig is not None:
            report.files.append(fig)
            index += [f"![{stem}](figures/{fig.name})", ""]
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


def _architectures(report, index, client, nets, ds, tables_dir, fig_dir) -> None:
    """The architecture-vulnerability map of one dataset: table, success heatmaps, labels shown vs size."""
    maps = clean_maps(client, nets)
    arch = architecture_table(nets, maps)
    n = n_text([r.num_samples for runs in nets.values() for r in runs])
    cap = (
        f"Architectures on {ds}: clean mAP, N ({n}), success (%) [95 % Wilson interval], labels shown and "
        "perturbation size per attack"
    )
    _add(
        report,
        index,
        write_table(arch, tables_dir, f"architectures_{ds}", cap),
        f"### Architectures: {ds}",
        cap,
        arch,
    )
    for fig in (
        architecture_map(
            nets,
            maps,
            f"Success (%) per architecture on {ds} ({n}; intervals in the table)",
            fig_dir / f"architectures_{ds}.png",
        ),
        shown_vs_size(nets, f"Labels shown vs perturbation size on {ds}", fig_dir / f"shown_vs_l2_{ds}.png"),
    ):
        report.files.append(fig)
        index += [f"![{fig.stem}](figures/{fig.name})", ""]


def _add(
    report: Report,
    index: list[str],
    paths: dict[str, Path],
    heading: str,
    caption: str,
    frame,
    models: list[str] | None = None,
) -> None:
    report.files += list(paths.values())
    report.markdown[paths["md"].stem] = to_markdown(frame, caption)
    index += [
        heading,
        "",
        caption + (f" — model: {', '.join(f'`{m}`' for m in models)}" if models else ""),
        "",
        to_markdown(frame),
        "",
        "Files: " + ", ".join(f"[{p.suffix[1:]}](tables/{p.name})" for p in paths.values()),
        "",
    ]
    if models and len(models) > 1:
        index += [
            f"> Note: rows come from {len(models)} different models; narrow with --filter "
            "\"params.model_uri = '...'\".",
            "",
        ]


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
