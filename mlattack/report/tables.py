"""The study's tables from attack runs, as pandas frames, and their Markdown / CSV / LaTeX forms.

Frames hold full-precision numbers (success rates in percent); only the Markdown and LaTeX renderings round, so the
CSV files are the exact source of every printed cell. Every success-rate column ``c`` travels with ``c low`` and
``c high``, its 95 % Wilson interval in percent (:mod:`mlattack.intervals`): the CSV keeps the three columns, the
printed forms show one cell "40 % [17–69]", so no rate is ever printed without its uncertainty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mlattack.intervals import format_bounds, wilson_interval
from mlattack.report.collect import NUM_SCENARIOS, AttackRun, attack_sort_key

SCENARIO_COLUMNS = [f"n={k}" for k in range(NUM_SCENARIOS)]
NETWORK_NAMES = {"mlgcn": "ML-GCN", "mlliw": "ML-LIW", "query2label": "Query2Label", "vit": "ViT"}
NORM_COLUMNS = {"l2_mean": "L2", "linf_mean": "Linf", "rmsd_mean": "RMSD"}
#: the optional columns of :func:`success_frame` and the metric each shows
#: the baseline rows' name: the selected samples' clean images, scored as the adversarial ones
NO_ATTACK = "no attack"
EXTRA_METRICS = {"labels shown": "labels_shown_mean", "L2 (all)": "l2_mean", "Linf (all)": "linf_mean"}
LOW, HIGH = " low", " high"  # suffixes of a rate column's interval bounds


def add_intervals(frame: pd.DataFrame, n_columns: dict[str, str]) -> pd.DataFrame:
    """A copy of ``frame`` with ``<c> low`` / ``<c> high`` (95 % Wilson, percent) right after each rate column
    ``c`` of ``n_columns`` (rate column -> its sample-count column); NaN where the rate or N is missing."""
    bounds: dict[str, tuple[list[float], list[float]]] = {}
    for col, n_col in n_columns.items():
        lows, highs = [], []
        for rate, n in zip(frame[col], frame[n_col], strict=True):
            if pd.isna(rate) or pd.isna(n) or int(n) <= 0:
                lows.append(np.nan)
                highs.append(np.nan)
                continue
            low, high = wilson_interval(round(float(rate) * int(n) / 100.0), int(n))
            lows.append(100.0 * low)
            highs.append(100.0 * high)
        bounds[col] = (lows, highs)
    out = {}
    for col in frame.columns:
        out[col] = frame[col]
        if col in bounds:
            out[col + LOW] = pd.Series(bounds[col][0], index=frame.index)
            out[col + HIGH] = pd.Series(bounds[col][1], index=frame.index)
    result = pd.DataFrame(out, index=frame.index)
    result.index.name = frame.index.name
    return result


def has_interval(frame: pd.DataFrame, column: str) -> bool:
    return column + LOW in frame.columns and column + HIGH in frame.columns


def shown_columns(frame: pd.DataFrame) -> list[str]:
    """The columns a printed table shows: the bounds are folded into their rate's cell."""
    return [
        c for c in frame.columns if not (c.endswith((LOW, HIGH)) and c.rsplit(" ", 1)[0] in frame.columns)
    ]


def rate_cell(rate: float, low: float, high: float) -> str:
    """'40 % [17–69]'; one decimal where the interval is narrower than 10 points (large N), else none."""
    if any(pd.isna(v) for v in (rate, low, high)):
        return "–"
    return format_bounds(rate, low, high, 1 if high - low < 10.0 else 0)


def n_text(counts) -> str:
    """'N = 10', or 'N = 6–10' over several counts (NaN ignored)."""
    values = sorted({int(v) for v in counts if v == v})
    if not values:
        return "N unknown"
    return f"N = {values[0]}" if len(values) == 1 else f"N = {values[0]}–{values[-1]}"


def sample_count(runs: list[AttackRun]) -> str:
    """'N = 10', or 'N = 6–10 (per row)' when the attacks ran on different numbers of samples."""
    text = n_text([r.num_samples for r in runs])
    return text + (" (per row)" if "–" in text else "")


def network_label(network: str) -> str:
    """``mlgcn`` -> ``ML-GCN``; a variant keeps its suffix: ``mlgcn-effnet`` -> ``ML-GCN (effnet)``."""
    base, _, variant = network.partition("-")
    if base not in NETWORK_NAMES:
        return network
    return NETWORK_NAMES[base] + (f" ({variant})" if variant else "")


def success_frame(
    rows: dict[str, dict[str, float]], extra: tuple[str, ...] = (), baseline: bool = False
) -> pd.DataFrame:
    """The success table from per-attack metrics (internal names, rates as fractions), rows in the study's order:
    N, the success rate (%) in scenarios n = 0..7, then the ``extra`` columns ("avgLabels" first when given, then
    any of "labels shown", "L2 (all)", "Linf (all)"). ``baseline``: the clean-image rows first (:func:`clean_rows`)."""
    front = [c for c in extra if c == "avgLabels"]
    back = [c for c in extra if c != "avgLabels"]
    out = {}
    first = clean_rows(rows) if baseline else {}
    for name, m in [*first.items(), *sorted(rows.items(), key=lambda kv: attack_sort_key(kv[0]))]:
        out[name] = {
            "N": m.get("num_samples", np.nan),
            "avgLabels": m.get("avg_labels", np.nan),
            **{c: 100.0 * m.get(f"success_rate_n{k}", np.nan) for k, c in enumerate(SCENARIO_COLUMNS)},
            **{c: m.get(EXTRA_METRICS[c], np.nan) for c in back},
        }
    frame = pd.DataFrame.from_dict(out, orient="index", columns=["N", *front, *SCENARIO_COLUMNS, *back])
    frame.index.name = "attack"
    return add_intervals(frame, dict.fromkeys(SCENARIO_COLUMNS, "N"))


def clean_rows(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The clean-image baseline of per-attack metrics that carry it (``clean_success_rate_n*``): what the attacked
    samples show with no attack, scored alike, so a rate is read against what needed no attack. One row per distinct
    N (the first 10 samples are not the first 50: their labels differ); no perturbation, so norms are 0."""
    out: dict[str, dict[str, float]] = {}
    with_clean = [
        m
        for _, m in sorted(rows.items(), key=lambda kv: attack_sort_key(kv[0]))
        if "clean_labels_shown_mean" in m
    ]
    several = len({int(m.get("num_samples", 0)) for m in with_clean}) > 1
    for m in with_clean:
        n = int(m.get("num_samples", 0))
        name = f"{NO_ATTACK}, N={n}" if several else NO_ATTACK
        if name in out:
            continue
        out[name] = {
            "num_samples": m.get("num_samples", np.nan),
            "avg_labels": m.get("avg_labels", np.nan),
            **{f"success_rate_n{k}": m[f"clean_success_rate_n{k}"] for k in range(NUM_SCENARIOS)},
            "labels_shown_mean": m["clean_labels_shown_mean"],
            **dict.fromkeys(("l2_mean", "linf_mean"), 0.0),
        }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["num_samples"]))


def success_table(runs: list[AttackRun], baseline: bool = False) -> pd.DataFrame:
    """The report's one success table: attacks as rows; N, avgLabels, the success rate (%) in scenarios n = 0..7
    with their intervals, and the mean labels shown (the ablation's view; sizes are in the norms table, costs in
    the cost table, so no number is printed twice)."""
    rows = {r.attack: {**r.metrics, "num_samples": r.num_samples, "avg_labels": r.avg_labels} for r in runs}
    return success_frame(rows, extra=("avgLabels", "labels shown"), baseline=baseline)


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
    return add_intervals(
        frame, {f"{c} {network_label(n)}": f"N {network_label(n)}" for c in SCENARIO_COLUMNS for n in tables}
    )


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


def table_rows(frame: pd.DataFrame) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(header, [(row name, cells)]) as every printed form shows them: rates with their interval in one cell,
    counts as integers, other numbers rounded (1 decimal for percentages, 3 for the rest)."""
    cols = shown_columns(frame)
    out = []
    for idx, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if has_interval(frame, c):
                cells.append(rate_cell(v, row[c + LOW], row[c + HIGH]))
            elif (c == "N" or c.startswith("N ")) and not pd.isna(v):
                cells.append(str(int(v)))
            elif c.endswith(" p") and isinstance(v, (float, np.floating)) and not pd.isna(v):
                cells.append(f"{v:.2g}")  # a p-value: two significant digits, never "0.000"
            else:
                cells.append(_cell(v, _digits(c)))
        out.append((str(idx), cells))
    return [frame.index.name or "", *cols], out


def to_markdown(frame: pd.DataFrame, caption: str = "") -> str:
    """GitHub-flavoured Markdown table (cells as :func:`table_rows` prints them)."""
    head, body = table_rows(frame)
    lines = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([idx, *cells]) + " |" for idx, cells in body]
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
    head, body = table_rows(frame)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}",
        r"\toprule",
        " & ".join(_latex_escape(str(h)) for h in head) + r" \\",
        r"\midrule",
    ]
    for idx, cells in body:
        lines.append(" & ".join([_latex_escape(idx), *(_latex_escape(c) for c in cells)]) + r" \\")
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
