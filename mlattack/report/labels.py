"""Which labels resist: per-label "turned on" rates from the attacks' per-sample tables.

Definitions (per attack, over its valid attacked samples):
    turned-on rate of label j = #(samples where j is not a true label and j is shown after the attack)
                                / #(samples where j is not a true label)

It is related to two properties of the label:
    frequency f_j        = share of training images that carry j;
    co-occurrence support of j in sample s = mean over the sample's true labels i of P(j | i) = M_ij / N_i,
                           the conditional probability ML-GCN's label graph is built from (M: co-occurrence
                           counts, N: label counts). A label's support is its mean over the samples where it is off.
Statistics come from the dataset's **training split** when the data source can be loaded (as ML-GCN's graph is);
otherwise from the attacked samples themselves (their true labels), which the result states in ``source``.
Correlations: Spearman across labels (rate vs frequency, rate vs support) and Pearson across (sample, off-label)
pairs between the turned-on indicator and the pair's support.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from mlattack.data.datamodule import SOURCES, MultiLabelDataModule
from mlattack.report.collect import AttackRun

log = logging.getLogger(__name__)

TRAIN_SOURCE = "training split"
SAMPLES_SOURCE = "attacked samples (training statistics unavailable)"


@dataclass
class LabelAnalysis:
    rates: (
        pd.DataFrame
    )  # attack × label, fraction turned on (labels sorted by frequency, most frequent first)
    labels: pd.DataFrame  # per label: frequency, cooccurrence_support, mean/min/max rate over attacks
    correlations: (
        pd.DataFrame
    )  # per attack (and "mean over attacks"): spearman_frequency, spearman_support, ...
    source: str  # where frequencies and co-occurrence come from


def _names(cell: str) -> set[str]:
    return {n for n in str(cell).split(";") if n}


def _valid(frame: pd.DataFrame) -> pd.DataFrame:
    if "valid" not in frame:
        return frame
    return frame[frame["valid"].astype(str).str.lower().isin(("true", "1"))]


def sample_statistics(
    samples: dict[str, pd.DataFrame], class_names: list[str]
) -> tuple[np.ndarray, np.ndarray, int]:
    """(label counts N, co-occurrence M, number of images) over the distinct attacked samples (by ``index``)."""
    index = {n: j for j, n in enumerate(class_names)}
    seen: dict[object, set[str]] = {}
    for frame in samples.values():
        for key, truth in zip(frame["index"], frame["true_labels"], strict=True):
            seen.setdefault(key, _names(truth))
    y = np.zeros((len(seen), len(class_names)))
    for row, truth in enumerate(seen.values()):
        for n in truth:
            y[row, index[n]] = 1
    return y.sum(0), y.T @ y, len(seen)


def conditional(counts: np.ndarray, cooccurrence: np.ndarray) -> np.ndarray:
    """P[i, j] = P(j | i) = M_ij / N_i (0 where label i never occurs), ML-GCN's row-wise normalisation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(counts[:, None] > 0, cooccurrence / counts[:, None], 0.0)
    np.fill_diagonal(p, 0.0)
    return p


def _defined(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a correlation is defined: at least 3 points and neither side constant (scipy would warn and
    return NaN)."""
    return len(a) >= 3 and np.ptp(a) > 0 and np.ptp(b) > 0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (average ranks for ties) over the points where both sides are numbers; NaN when undefined."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    return float(spearmanr(a, b).statistic) if _defined(a, b) else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; NaN when undefined or when a value is missing (the per-pair inputs never miss one)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.isnan(a).any() or np.isnan(b).any() or not _defined(a, b):
        return float("nan")
    return float(pearsonr(a, b).statistic)


def analyse_labels(
    samples: dict[str, pd.DataFrame],
    class_names: list[str] | None = None,
    train_counts: np.ndarray | None = None,
    train_cooccurrence: np.ndarray | None = None,
    train_images: int | None = None,
) -> LabelAnalysis:
    """Turned-on rates per attack and label, and their relation to frequency and co-occurrence (module doc).

    ``samples`` maps attack name -> its ``samples.csv``. Without ``class_names`` the labels are those named in
    the tables; without training statistics they are computed from the attacked samples.
    """
    samples = {a: _valid(f) for a, f in samples.items()}
    if class_names is None:
        class_names = _named_labels(samples)
    if train_counts is not None and train_cooccurrence is not None and train_images:
        counts, cooc, total, source = (
            np.asarray(train_counts, float),
            np.asarray(train_cooccurrence, float),
            int(train_images),
            TRAIN_SOURCE,
        )
    else:
        (counts, cooc, total), source = sample_statistics(samples, class_names), SAMPLES_SOURCE
    frequency = counts / max(total, 1)
    rates, corr_rows, support = _turned_on(samples, class_names, conditional(counts, cooc), frequency)
    return _tables(class_names, rates, corr_rows, frequency, support, source)


def _named_labels(samples: dict[str, pd.DataFrame]) -> list[str]:
    """Every label the tables name, sorted."""
    names = set()
    for f in samples.values():
        for col in ("true_labels", "labels_shown_names"):
            for cell in f[col]:
                names |= _names(cell)
    return sorted(names)


def _turned_on(
    samples: dict[str, pd.DataFrame], class_names: list[str], p: np.ndarray, frequency: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, dict], np.ndarray]:
    """Per attack, how often each label that was off came on (and the correlation rows); per label, its mean
    co-occurrence support from the true labels, each sample counted once across attacks."""
    index = {n: j for j, n in enumerate(class_names)}
    c = len(class_names)
    rates, corr_rows = {}, {}
    support_sum, support_n = np.zeros(c), np.zeros(c)
    counted: set[object] = set()
    for attack, frame in samples.items():
        off = np.zeros(c)
        on = np.zeros(c)
        flags, supports = [], []
        for key, truth_cell, shown_cell in zip(
            frame["index"], frame["true_labels"], frame["labels_shown_names"], strict=True
        ):
            truth = [index[n] for n in _names(truth_cell)]
            shown = {index[n] for n in _names(shown_cell)}
            sup = p[truth].mean(0) if truth else np.zeros(c)
            for j in range(c):
                if j in truth:
                    continue
                off[j] += 1
                on[j] += j in shown
                flags.append(float(j in shown))
                supports.append(sup[j])
                if key not in counted:
                    support_sum[j] += sup[j]
                    support_n[j] += 1
            counted.add(key)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(off > 0, on / np.maximum(off, 1), np.nan)
        rates[attack] = rate
        corr_rows[attack] = {
            "spearman_frequency": spearman(rate, frequency),
            "pearson_pair_support": pearson(np.array(flags), np.array(supports)),
            "labels": int((off > 0).sum()),
            "pairs": len(flags),
        }
    with np.errstate(divide="ignore", invalid="ignore"):
        support = np.where(support_n > 0, support_sum / np.maximum(support_n, 1), np.nan)
    for attack in rates:
        corr_rows[attack]["spearman_support"] = spearman(rates[attack], support)
    return rates, corr_rows, support


def _tables(
    class_names: list[str],
    rates: dict[str, np.ndarray],
    corr_rows: dict[str, dict],
    frequency: np.ndarray,
    support: np.ndarray,
    source: str,
) -> LabelAnalysis:
    """The rate, label and correlation tables, labels from the most frequent down."""
    c = len(class_names)
    order = np.argsort(-frequency, kind="stable")
    ordered = [class_names[j] for j in order]
    rate_frame = pd.DataFrame({a: r[order] for a, r in rates.items()}, index=ordered).T
    rate_frame.index.name = "attack"
    mean_rate = rate_frame.mean(axis=0, skipna=True).to_numpy() if rates else np.full(c, np.nan)
    labels = pd.DataFrame(
        {
            "frequency": frequency[order],
            "cooccurrence_support": support[order],
            "mean_rate": mean_rate,
            "min_rate": rate_frame.min(axis=0).to_numpy() if rates else np.nan,
            "max_rate": rate_frame.max(axis=0).to_numpy() if rates else np.nan,
        },
        index=ordered,
    )
    labels.index.name = "label"
    corr = pd.DataFrame.from_dict(
        corr_rows,
        orient="index",
        columns=["spearman_frequency", "spearman_support", "pearson_pair_support", "labels", "pairs"],
    )
    if rates:
        corr.loc["mean over attacks"] = [
            spearman(mean_rate, frequency[order]),
            spearman(mean_rate, support[order]),
            np.nan,
            int(np.isfinite(mean_rate).sum()),
            0,
        ]
    corr.index.name = "attack"
    return LabelAnalysis(rate_frame, labels, corr, source)


def label_markdown(result: LabelAnalysis, max_rows: int = 12) -> str:
    """The most resistant labels first (lowest mean turned-on rate), and the correlation numbers."""
    table = result.labels.dropna(subset=["mean_rate"]).sort_values("mean_rate", kind="stable")
    lines = [
        f"Label statistics from: {result.source}.",
        "",
        "| label | frequency | co-occurrence support | turned on, mean over attacks (%) | min (%) | max (%) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in table.head(max_rows).iterrows():
        lines.append(
            f"| {name} | {r.frequency:.3f} | {r.cooccurrence_support:.3f} | {100 * r.mean_rate:.1f} | "
            f"{100 * r.min_rate:.1f} | {100 * r.max_rate:.1f} |"
        )
    if len(table) > max_rows:
        lines.append(f"| … {len(table) - max_rows} more in the CSV | | | | | |")
    lines += [
        "",
        "| attack | Spearman(rate, frequency) | Spearman(rate, support) | Pearson(on, support) per pair |",
        "|---|---|---|---|",
    ]
    for name, r in result.correlations.iterrows():
        cells = [
            "–" if pd.isna(v) else f"{v:+.2f}"
            for v in (r.spearman_frequency, r.spearman_support, r.pearson_pair_support)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_statistics(dataset: str, runs: list[AttackRun], data: MultiLabelDataModule | None = None):
    """(class names, label counts, co-occurrence, number of images) of the training split, or None.

    Uses ``data`` when it is that source; otherwise builds the source when it needs no folder (the built-in
    dataset) with the runs' image size and class count. None when it cannot be loaded or its classes differ
    from the runs' (then the label analysis falls back to the attacked samples)."""
    num_classes = next((r.num_classes for r in runs if r.num_classes), None)
    try:
        if data is None or data.source != dataset:
            if dataset not in SOURCES or SOURCES[dataset][2]:
                return None
            size = int(runs[0].params.get("image_size", 64))
            options = {"num_classes": num_classes} if dataset == "synthetic" and num_classes else {}
            data = MultiLabelDataModule(source=dataset, image_size=size, num_workers=0, options=options)
        stats = data.label_stats("train")
    except Exception as e:  # a missing folder or a changed source must not stop the report
        log.warning("no training statistics for %s (%s); using the attacked samples", dataset, e)
        return None
    if num_classes is not None and stats.num_classes != num_classes:
        return None
    return stats.class_names, stats.label_counts(), stats.cooccurrence_matrix(), stats.num_images
