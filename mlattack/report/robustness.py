"""The robustness section of the report: per victim (a network, an adversarially trained network, or a network
behind a preprocessing defence under a plain or an adaptive attack), its clean val mAP against the labels its
attacked samples show under ML-APGD, PGD (per L∞ budget) and ML-CW, with 95 % intervals, and the frontier figure.

Where the numbers come from: clean val mAP is the attack run's ``clean_val_mAP`` (the victim as attacked, behind its
defence if any, on the val split; every run logs it, so a ``.ckpt`` victim has one too), else, for runs older than
that metric, a defended run's ``defence/clean_val_mAP`` or the registered version's score (``mlattack fit``'s
val/mAP). Labels shown: the mean over the attacked samples of the labels the judged adversarial image
shows, with a 95 % t-interval from the per-sample table; "all shown": the share of samples that show every label,
with its Wilson interval (:mod:`mlattack.intervals`). A defence credited only under the plain attack (its adaptive
row shows many more labels) masks gradients rather than resisting the attack.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from mlattack.intervals import format_rate  # noqa: E402
from mlattack.models.adversarial import TAG_PREFIX  # noqa: E402
from mlattack.report.architectures import clean_map  # noqa: E402
from mlattack.report.collect import AttackRun, load_samples  # noqa: E402
from mlattack.tracking.record import CLEAN_MAP_METRIC, OLD_DEFENCE_MAP_METRIC  # noqa: E402

#: the attacks the section reads, by the name their runs carry (``APGD[eps=0.03]``, ``PGD[eps=0.1]``, ``MLCW-...``)
FAMILIES = ("APGD", "PGD", "MLCW")
#: the L∞ budget the frontier figure is drawn at (ML-CW: its own minimum-norm budget)
FRONTIER_EPS = 0.03


def family(attack: str) -> str | None:
    head = re.split(r"[\[\-]", attack, maxsplit=1)[0].upper()
    return head if head in FAMILIES else None


def budget(run: AttackRun) -> float | None:
    """The run's L∞ budget (``attack.eps``), None for ML-CW (minimum-norm)."""
    value = run.params.get("attack.eps")
    return float(value) if value not in (None, "", "None") and family(run.attack) != "MLCW" else None


def column(run: AttackRun) -> str:
    """The table's column: the attack's name without its grid point, and the L∞ budget (``APGD ε=0.03``,
    ``APGD-30it-margin ε=0.03``, ``MLCW-reduced``); two attacks of one family at one budget keep their own cells."""
    name, eps = run.attack.split("[", 1)[0], budget(run)
    return name if eps is None else f"{name} ε={eps:g}"


def mean_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95 % t-interval (degenerate when every value is equal)."""
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def is_robustness_run(client: mlflow.MlflowClient, run: AttackRun, trained: dict[str, bool]) -> bool:
    """A defended run, or a run on a version registered with adversarial-training tags."""
    if run.params.get("defence/label"):
        return True
    if run.model_uri not in trained:
        trained[run.model_uri] = any(k.startswith(TAG_PREFIX) for k in _version_tags(client, run.model_uri))
    return trained[run.model_uri]


def _version_tags(client: mlflow.MlflowClient, uri: str) -> dict[str, str]:
    if not uri.startswith("models:/"):
        return {}
    ref = uri[len("models:/") :]
    try:
        if "@" in ref:
            version = client.get_model_version_by_alias(*ref.split("@", 1))
        else:
            version = client.get_model_version(*ref.rsplit("/", 1))
    except mlflow.exceptions.MlflowException:
        return {}
    return dict(version.tags or {})


def victim_clean_map(client: mlflow.MlflowClient, run: AttackRun) -> float:
    """The victim's clean val mAP as its attack run logged it (module docstring); NaN when nothing knows it."""
    logged = client.get_run(run.parent_id).data.metrics
    for name in (CLEAN_MAP_METRIC, OLD_DEFENCE_MAP_METRIC):
        if name in logged:
            return float(logged[name])
    return math.nan if run.params.get("defence/label") else clean_map(client, run.model_uri)


def robustness_frames(
    client: mlflow.MlflowClient, runs: list[AttackRun]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per victim and attack column: labels shown with interval, all-shown rate with interval) as a long frame,
    and the per-victim clean mAP. Empty frames when the runs hold no victim of this section."""
    trained: dict[str, bool] = {}
    mine = [r for r in runs if family(r.attack)]
    if not any(is_robustness_run(client, r, trained) for r in mine):
        return pd.DataFrame(), pd.DataFrame()
    rows, maps = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in mine:
            samples = load_samples(client, r, tmp)
            shown = samples["labels_shown"].to_numpy(float) if samples is not None else np.array([])
            mean, low, high = (
                mean_interval(shown) if len(shown) else (r.metrics.get("labels_shown_mean"),) * 3
            )
            n = int(r.num_samples)
            everything = round(r.metrics.get("success_rate_n7", math.nan) * n) if n else 0
            rows.append({"victim": r.network, "column": column(r), "family": family(r.attack), "eps": budget(r),
                         "labels shown": mean, "low": low, "high": high, "all shown": everything, "N": n,
                         "C": r.num_classes, "run_id": r.run_id})  # fmt: skip
            if r.network not in maps:
                maps[r.network] = victim_clean_map(client, r)
    long = pd.DataFrame(rows)
    clean = pd.DataFrame({"victim": list(maps), "clean val mAP": list(maps.values())}).set_index("victim")
    return long, clean


def _order(columns: list[str]) -> list[str]:
    def key(c: str) -> tuple:
        name, _, eps = c.partition(" ε=")
        fam = family(name)
        return (FAMILIES.index(fam) if fam else 9, float(eps) if eps else math.inf)

    return sorted(columns, key=key)


def wide_tables(long: pd.DataFrame, clean: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Victims x attack columns: "mean [low–high]" labels shown, and "all shown" rates with Wilson intervals."""

    def cell(r) -> str:
        if math.isnan(r["low"]):
            return f"{r['labels shown']:.2f}"
        return f"{r['labels shown']:.2f} [{max(r['low'], 0):.2f}–{r['high']:.2f}]"

    long = long.assign(shown=long.apply(cell, axis=1),
                       rate=long.apply(lambda r: format_rate(r["all shown"], r["N"]), axis=1))  # fmt: skip
    cols = _order(sorted(set(long["column"])))
    out = []
    for value in ("shown", "rate"):
        wide = long.pivot_table(index="victim", columns="column", values=value, aggfunc="first")[cols]
        wide.insert(0, "clean val mAP", clean["clean val mAP"].reindex(wide.index).map(lambda v: f"{v:.3f}"))
        wide.insert(1, "N", long.groupby("victim")["N"].max().reindex(wide.index))
        out.append(wide)
    return out[0], out[1]


def frontier_figure(long: pd.DataFrame, clean: pd.DataFrame, path: Path) -> Path:
    """Clean val mAP against labels shown, one point per victim, one panel per attack (ML-APGD and PGD at
    ``FRONTIER_EPS``, ML-CW), error bars the 95 % intervals."""
    panels = [(f, FRONTIER_EPS) for f in ("APGD", "PGD")] + [("MLCW", None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), sharey=True)
    victims = sorted(set(long["victim"]))
    colours = {v: plt.get_cmap("tab20")(i % 20) for i, v in enumerate(victims)}
    for ax, (fam, eps) in zip(axes, panels, strict=True):
        part = long[
            (long["family"] == fam) & (long["eps"].isna() if eps is None else np.isclose(long["eps"], eps))
        ]
        several = part["victim"].duplicated(keep=False)  # a victim with two attacks here: name the attack too
        markers = {c: "os^Dv"[i % 5] for i, c in enumerate(_order(sorted(set(part["column"]))))}
        for i, r in part.iterrows():
            y = clean["clean val mAP"].get(r["victim"], math.nan)
            err = (
                None
                if math.isnan(r["low"])
                else [[r["labels shown"] - r["low"]], [r["high"] - r["labels shown"]]]
            )
            label = f"{r['victim']}: {r['column']}" if several[i] else r["victim"]
            ax.errorbar(r["labels shown"], y, xerr=err, fmt=markers[r["column"]], color=colours[r["victim"]],
                        label=label, capsize=3)  # fmt: skip
        ax.set_title(fam if eps is None else f"{fam}, L∞ ε = {eps:g}")
        ax.set_xlabel("labels shown (mean, 95 % CI)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("clean val mAP")
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Robustness frontier: clean accuracy vs labels shown (up-left is better)")
    fig.tight_layout(rect=(0, 0.08 + 0.03 * (len(handles) // 4), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def robustness_sections(client: mlflow.MlflowClient, runs: list[AttackRun], fig_dir: Path) -> list[tuple]:
    """[(stem, heading, caption, frame, figure or None)] for the report; none without robustness victims."""
    long, clean = robustness_frames(client, runs)
    if long.empty:
        return []
    dataset = runs[0].dataset
    shown, rates = wide_tables(long, clean)
    fig = frontier_figure(long, clean, fig_dir / f"robustness_{dataset}.png")
    cap = (f"Robustness on {dataset}: clean val mAP and mean labels shown [95 % t-interval] per attack "
           "(`+<defence>`: preprocessing defence, plain attack; `+adaptive`: BPDA/EOT attack)")  # fmt: skip
    cap_rate = f"Robustness on {dataset}: samples showing every label, % [95 % Wilson interval]"
    return [
        (f"robustness_{dataset}", "## Robustness", cap, shown, fig),
        (f"robustness_all_{dataset}", "### Robustness: every label shown", cap_rate, rates, None),
    ]
