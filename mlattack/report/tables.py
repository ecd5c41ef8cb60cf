"""The study's tables from attack runs, as pandas frames, and their Markdown / CSV / LaTeX forms.

Frames hold full-precision numbers (success rates in percent); only the Markdown and LaTeX renderings round, so the
CSV files are the exact source of every printed cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlattack.report.collect import NUM_SCENARIOS, AttackRun, attack_sort_key

SCENARIO_COLUMNS = [f"n={k}" for k in range(NUM_SCENARIOS)]
NETWORK_NAMES = {"mlgcn": "ML-GCN", "mlliw": "ML-LIW", "query2label": "Query2Label", "vit": "ViT"}
NORM_COLUMNS = {"l2_mean": "L2", "linf_mean": "Linf", "rmsd_mean": "RMSD"}
#: the optional columns of :func:`success_frame` and the metric each shows
EXTRA_METRICS = {"labels shown": "labels_shown_mean", "L2 (all)": "l2_mean", "Linf (all)": "linf_mean"}


def network_label(network: str) -> str:
    """``mlgcn`` -> ``ML-GCN``; a variant keeps its suffix: ``mlgcn-effnet`` -> ``ML-GCN (effnet)``."""
    base, _, variant = network.partition("-")
    if base not in NETWORK_NAMES:
        return network
    return NETWORK_NAMES[base] + (f" ({variant})" if variant else "")


def success_frame(rows: dict[str, dict[str, float]], extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """The success table from per-attack metrics (internal names, rates as fractions), rows in the study's order:
    N, the success rate (%) in scenarios n = 0..7, then the ``extra`` columns ("avgLabels" first when given, then
    any of "labels shown", "L2 (all)", "Linf (all)")."""
    front = [c for c in extra if c == "avgLabels"]
    back = [c for c in extra if c != "avgLabels"]
    out = {}
    for name in sorted(rows, key=attack_sort_key):
        m = rows[name]
        out[name] = {
            "N": m.get("num_samples", np.nan),
            "avgLabels": m.get("avg_labels", np.nan),
            **{c: 100.0 * m.get(f"success_rate_n{k}", np.nan) for k, c in enumerate(SCENARIO_COLUMNS)},
            **{c: m.get(EXTRA_METRICS[c], np.nan) for c in back},
        }
    frame = pd.DataFrame.from_dict(out, orient="index", columns=["N", *front, *SCENARIO_COLUMNS, *back])
    frame.index.name = "attack"
    return frame


def success_table(runs: list[AttackRun]) -> pd.DataFrame:
    """Attacks as rows; N, avgLabels and the success rate (%) in scenarios n = 0..7 as columns."""
    rows = {r.attack: {**r.metrics, "num_samples": r.num_samples, "avg_labels": r.avg_labels} for r in runs}
    return success_frame(rows, extra=("avgLabels",))


def norms_table(runs: list[AttackRun], scenario: int = 0) -> pd.DataFrame:
    """Mean perturbation size per attack: L2, L∞ (pixel range [0, 1]) and RMSD (the study's 0-255 scale), averaged
    two ways, both labelled: over every attacked sample, and over the samples that succeeded in ``scenario`` (the
    study's code drops failed samples before averaging; "–" where none succeeded)."""
    cols = {f"{name} (all)": key for key, name in NORM_COLUMNS.items()}
    cols.update(
        {f"{name} (succ. n={scenario})": f"{key}_success_n{scenario}" for key, name in NORM_COLUMNS.items()}
    )
    rows = {
        r.attack: {col: r.metrics.get(key, np.nan) for col, key in cols.items()}
        for r in sorted(runs, key=lambda r: attack_sort_key(r.attack))
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(cols))
    frame.index.name = "attack"
    return frame


def norm_by_scenario_table(runs: list[AttackRun], norm: str = "l2") -> pd.DataFrame:
    """Mean ``norm`` over the samples that succeeded in each scenario n = 0..7 (the study's averaging)."""
    label = NORM_COLUMNS.get(f"{norm}_mean", norm)
    rows = {
        r.attack: {
            f"{label} n={k}": r.metrics.get(f"{norm}_mean_success_n{k}", np.nan) for k in range(NUM_SCENARIOS)
        }
        for r in sorted(runs, key=lambda r: attack_sort_key(r.attack))
    }
    frame = pd.DataFrame.from_dict(
        rows, orient="index", columns=[f"{label} n={k}" for k in range(NUM_SCENARIOS)]
    )
    frame.index.name = "attack"
    return frame


def summary_table(runs: list[AttackRun]) -> pd.DataFrame:
    """One row per attack: success (%) n = 0..7, mean labels shown and mean L∞ (all samples) — the ablation view,
    where each row is one variant of an attack."""
    rows = {r.attack: {**r.metrics, "num_samples": r.num_samples} for r in runs}
    return success_frame(rows, extra=("labels shown", "Linf (all)"))


def comparison_table(by_network: dict[str, list[AttackRun]]) -> pd.DataFrame:
    """One dataset, networks side by side: rows are attacks, columns ``n=k <network>`` interleaved per scenario."""
    tables = {net: success_table(runs) for net, runs in by_network.items()}
    attacks = sorted({a for t in tables.values() for a in t.index}, key=attack_sort_key)
    cols = {}
    for c in ["N", *SCENARIO_COLUMNS]:
        for net, t in tables.items():
            cols[f"{c} {network_label(net)}"] = t[c].reindex(attacks)
    frame = pd.DataFrame(cols, index=attacks)
    frame.index.name = "attack"
    return frame


def _cell(value: object, digits: int) -> str:
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def _digits(column: str) -> int:
    if column == "labels shown":
        return 2
    return 3 if column.startswith(("avgLabels", "L2", "Linf", "RMSD", "clean mAP")) else 1


def to_markdown(frame: pd.DataFrame, caption: str = "") -> str:
    """GitHub-flavoured Markdown table (rounded: 1 decimal for percentages, 3 for the rest)."""
    head = [frame.index.name or "", *frame.columns]
    lines = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "---|" * len(head)]
    for idx, row in frame.iterrows():
        cells = [
            _cell(v if not (c == "N" or c.startswith("N ")) or pd.isna(v) else int(v), _digits(c))
            for c, v in row.items()
        ]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return (f"{caption}\n\n" if caption else "") + "\n".join(lines)


def _latex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("[", "{[}"),
        ("]", "{]}"),
        ("∞", r"$\infty$"),
        ("ⁿ", r"$^n$"),
    ):
        text = text.replace(a, b)
    return text


def to_latex(frame: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs ``table`` environment with the same rounding as the Markdown form."""
    head = [frame.index.name or "", *frame.columns]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{l" + "r" * len(frame.columns) + "}",
        r"\toprule",
        " & ".join(_latex_escape(str(h)) for h in head) + r" \\",
        r"\midrule",
    ]
    for idx, row in frame.iterrows():
        cells = [
            _cell(v if not (c == "N" or c.startswith("N ")) or pd.isna(v) else int(v), _digits(c))
            for c, v in row.items()
        ]
        lines.append(" & ".join([_latex_escape(str(idx)), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + _latex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(frame: pd.DataFrame, folder: Path, stem: str, caption: str = "") -> dict[str, Path]:
    """``<stem>.md``, ``<stem>.csv`` (full precision) and ``<stem>.tex`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {ext: folder / f"{stem}.{ext}" for ext in ("md", "csv", "tex")}
    paths["md"].write_text(to_markdown(frame, caption) + "\n")
    frame.to_csv(paths["csv"])
    paths["tex"].write_text(to_latex(frame, caption, label=f"tab:{stem}"))
    return paths
