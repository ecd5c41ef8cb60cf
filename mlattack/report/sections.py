"""The sections of the report (:func:`mlattack.report.build.build_report`): a :class:`Sheet` that writes each table and
figure and lists it in the index, and the sections written per network, per dataset and across runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlattack.report import plots
from mlattack.report.architectures import architecture_map, architecture_table, clean_maps, shown_vs_size
from mlattack.report.collect import AttackRun, load_samples
from mlattack.report.costs import cost_section
from mlattack.report.grids import grid_heatmaps, sensitivity_grids
from mlattack.report.labels import analyse_labels, label_markdown, training_statistics
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
from mlattack.scenarios import exp_labels


@dataclass
class Report:
    """What :func:`build_report` made: the folder, the report run, and the Markdown of every table."""

    output_dir: Path
    run_id: str
    runs: list[AttackRun]
    markdown: dict[str, str] = field(default_factory=dict)  # stem -> Markdown table (as printed)
    files: list[Path] = field(default_factory=list)


@dataclass
class Sheet:
    """The report as it is written: its files, the index's lines, and where tables and figures go."""

    report: Report
    index: list[str]
    tables_dir: Path
    fig_dir: Path

    def table(self, frame, stem: str, heading: str, caption: str, models: list[str] | None = None) -> None:
        """Write ``frame`` as ``tables/<stem>.*`` and put it in the index under ``heading``."""
        paths = write_table(frame, self.tables_dir, stem, caption)
        add_table(self.report, self.index, paths, heading, caption, frame, models)

    def figure(self, fig: Path, alt: str) -> None:
        self.report.files.append(fig)
        self.index += [f"![{alt}](figures/{fig.name})", ""]


def network_section(sheet: Sheet, client, net: str, ds: str, group: list[AttackRun], data, tmp: str) -> None:
    """One network on one dataset: the success table and curve, perturbation sizes, cost, labels shown."""
    title = f"{network_label(net)} on {ds}"
    c = next((r.num_classes for r in group if r.num_classes), None)
    avg = float(np.median([r.avg_labels for r in group]))
    exp = exp_labels(avg, c) if c else None
    caption = (
        f"Success rate (%) [95 % Wilson interval] and mean labels shown, {title}: {sample_count(group)}, "
        f"avgLabels = {avg:.3f}"
        + (f", C = {c}, expLabels = " + ", ".join(f"{e:.2f}" for e in exp) if exp else "")
    )
    table = success_table(group, baseline=True)
    sheet.table(table, f"success_{net}_{ds}", f"## {title}", caption, sorted({r.model_uri for r in group}))
    fig = plots.success_vs_n(
        table,
        f"Showing many labels: {title} ({sample_count(group)}; bars: 95 % Wilson)",
        sheet.fig_dir / f"success_{net}_{ds}.png",
        exp,
    )
    sheet.figure(fig, f"success vs n, {title}")
    extra = (  # (file stem, heading, caption, frame)
        ("norms", "### Perturbation size", f"Mean perturbation per attack, {title} (L2 and L∞ on [0,1] "
         "pixels, RMSD on the 0-255 scale)", norms_table(group)),
        ("l2_success", "### L2 over successful samples", f"Mean L2 over the samples that succeeded in "
         f"each scenario, {title} (the study's averaging)", norm_by_scenario_table(group, "l2")),
    )  # fmt: skip
    for stem, heading, cap, frame in extra:
        sheet.table(frame, f"{stem}_{net}_{ds}", heading, cap)
    if cost := cost_section(group, title, sheet.fig_dir / f"cost_{net}_{ds}.png"):
        frame, cap, fig = cost
        sheet.table(frame, f"cost_{net}_{ds}", "### Cost", cap)
        sheet.figure(fig, f"success vs cost, {title}")
    label_section(sheet, client, group, net, ds, data, tmp)


def comparisons(sheet: Sheet, client, grouped: dict[tuple[str, str], list[AttackRun]]) -> None:
    """Per dataset with two networks or more: the model comparison and the architecture map."""
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
        sheet.table(comp, f"compare_{ds}", f"## Model comparison: {ds}", cap)
        _architectures(sheet, client, nets, ds)


def sweeps(sheet: Sheet, runs: list[AttackRun]) -> None:
    """Budget sweeps (success vs one parameter) and sensitivity grids (over two or more)."""
    curves = budget_curves(runs)
    if curves:
        sheet.index += ["## Budget sweeps", ""]
    for curve in curves:
        title = (
            f"{curve.attack} on {network_label(curve.network)} / {curve.dataset}: success vs {curve.param} "
            f"({n_text(curve.table['N'])}, band: 95 % Wilson)"
        )
        frame = curve.table.drop(columns=["run_id"])
        sheet.table(frame, curve.stem, f"### {title}", title)
        sheet.figure(
            plots.success_vs_budget(frame, curve.param, title, sheet.fig_dir / f"{curve.stem}.png"), title
        )
    for grid in sensitivity_grids(runs):
        title = (
            f"{grid.attack} on {network_label(grid.network)} / {grid.dataset}: grid over {' x '.join(grid.params)} "
            f"({n_text(grid.table['N'])} per point; intervals in the table)"
        )
        frame = grid.points()
        sheet.table(frame, grid.stem, f"### {title}", title)
        sheet.figure(grid_heatmaps(grid, title, sheet.fig_dir / f"{grid.stem}.png"), title)


def _architectures(sheet: Sheet, client, nets, ds) -> None:
    """The architecture-vulnerability map of one dataset: table, success heatmaps, labels shown vs size."""
    maps = clean_maps(client, nets)
    arch = architecture_table(nets, maps)
    n = n_text([r.num_samples for runs in nets.values() for r in runs])
    cap = (
        f"Architectures on {ds}: clean mAP, N ({n}), success (%) [95 % Wilson interval], labels shown and "
        "perturbation size per attack"
    )
    sheet.table(arch, f"architectures_{ds}", f"### Architectures: {ds}", cap)
    for fig in (
        architecture_map(
            nets,
            maps,
            f"Success (%) per architecture on {ds} ({n}; intervals in the table)",
            sheet.fig_dir / f"architectures_{ds}.png",
        ),
        shown_vs_size(
            nets, f"Labels shown vs perturbation size on {ds}", sheet.fig_dir / f"shown_vs_l2_{ds}.png"
        ),
    ):
        sheet.figure(fig, fig.stem)


def add_table(
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


def label_section(sheet: Sheet, client, group: list[AttackRun], net: str, ds: str, data, tmp: str) -> None:
    """The report's label analysis of one network and dataset: CSV/Markdown tables, the heatmap, the index text
    (:mod:`mlattack.report.labels` computes it)."""
    report, index, tables_dir, fig_dir = sheet.report, sheet.index, sheet.tables_dir, sheet.fig_dir
    samples = {r.attack: f for r in group if (f := load_samples(client, r, tmp)) is not None and len(f)}
    if not samples:
        return
    stats = training_statistics(ds, group, data)
    if stats is None:
        result = analyse_labels(samples)
    else:
        names, counts, cooc, n = stats
        result = analyse_labels(samples, names, counts, cooc, n)
    stem = f"labels_{net}_{ds}"
    title = f"Which labels resist: {network_label(net)} on {ds}"
    result.labels.to_csv(tables_dir / f"{stem}.csv")
    result.rates.to_csv(tables_dir / f"{stem}_rates.csv")
    result.correlations.to_csv(tables_dir / f"{stem}_correlations.csv")
    md = label_markdown(result)
    (tables_dir / f"{stem}.md").write_text(f"{title}\n\n{md}\n")
    fig = plots.label_heatmap(result.rates, title, fig_dir / f"{stem}.png", result.source)
    report.markdown[stem] = md
    report.files += [tables_dir / f"{stem}.{ext}" for ext in ("csv", "md")] + [
        tables_dir / f"{stem}_rates.csv",
        tables_dir / f"{stem}_correlations.csv",
        fig,
    ]
    index += [
        f"### {title}",
        "",
        "Turned-on rate of a label = share of attacked samples without that label that "
        "show it after the attack.",
        "",
        md,
        "",
        f"![label heatmap, {net} {ds}](figures/{fig.name})",
        "",
    ]
