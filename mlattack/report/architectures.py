"""The architecture-vulnerability map: several networks attacked on one dataset, side by side.

One success heatmap (attacks x scenarios n) per network with the network's clean validation mAP in its title, and
a "labels shown vs perturbation size" figure with one line per network (one point per attack). Together they answer
whether a network is more vulnerable than another at the same perturbation size, not only at its attacks' budgets.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from mlattack.report.collect import AttackRun, attack_sort_key
from mlattack.report.plots import plt
from mlattack.report.tables import SCENARIO_COLUMNS, add_intervals, network_label, success_table
from mlattack.tracking.promotion import SCORE_TAG

MAP_METRICS = ("best/val_mAP", "val/mAP")


def clean_map(client: mlflow.MlflowClient, model_uri: str) -> float:
    """The validation mAP recorded for a registered model (``models:/name/version`` or ``models:/name@alias``):
    the version's score tag (``mlattack.val_mAP``) if present, else the metric of the run that produced it; NaN
    when unknown."""
    if not model_uri.startswith("models:/"):
        return float("nan")
    ref = model_uri[len("models:/") :]
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.rsplit("/", 1)
            version = client.get_model_version(name, number)
        tags = version.tags or {}
        for tag in (SCORE_TAG, "val_mAP"):  # what `mlattack fit` registers; the name older stores used
            if tag in tags:
                return float(tags[tag])
        metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    except (mlflow.exceptions.MlflowException, ValueError):
        return float("nan")
    return next((float(metrics[k]) for k in MAP_METRICS if k in metrics), float("nan"))


def clean_maps(client: mlflow.MlflowClient, by_network: dict[str, list[AttackRun]]) -> dict[str, float]:
    """Per network, the best clean mAP among the models its runs attacked (NaN when none is known)."""
    return {
        net: float(np.nanmax([clean_map(client, u) for u in {r.model_uri for r in runs}] or [np.nan]))
        for net, runs in by_network.items()
    }


def architecture_table(by_network: dict[str, list[AttackRun]], maps: dict[str, float]) -> pd.DataFrame:
    """Rows (network, attack): clean mAP, N, success (%) n = 0..7 with intervals, mean labels shown, L2 and L∞."""
    rows = []
    for net, runs in by_network.items():
        table = success_table(runs)
        by_name = {r.attack: r for r in runs}
        for attack, row in table.iterrows():
            m = by_name[attack].metrics
            rows.append(
                {
                    "network": network_label(net),
                    "attack": attack,
                    "clean mAP": maps.get(net, np.nan),
                    "N": row["N"],
                    **{c: row[c] for c in SCENARIO_COLUMNS},
                    "labels shown": m.get("labels_shown_mean", np.nan),
                    "L2 (all)": m.get("l2_mean", np.nan),
                    "Linf (all)": m.get("linf_mean", np.nan),
                }
            )
    return add_intervals(pd.DataFrame(rows).set_index("attack"), dict.fromkeys(SCENARIO_COLUMNS, "N"))


#: one marker per attack in the shown-vs-size figure (colours are the networks)
MARKERS = "os^vDP*Xph<>Hd"
PANELS_PER_ROW = 3


def architecture_map(
    by_network: dict[str, list[AttackRun]], maps: dict[str, float], title: str, path: Path
) -> Path:
    """One heatmap per network (up to three per row): rows attacks (the study's order), columns n = 0..7, cells
    success (%). When every network has the same attacks, only the first panel of a row names them."""
    nets = list(by_network)
    tables = {net: success_table(by_network[net])[SCENARIO_COLUMNS] for net in nets}
    same_rows = len({tuple(t.index) for t in tables.values()}) == 1
    cols = min(len(nets), PANELS_PER_ROW)
    rows = -(-len(nets) // cols)
    height = max(len(t) for t in tables.values()) * 0.32 + 1.3
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 1.6, height * rows), squeeze=False)
    fig.subplots_adjust(wspace=0.08 if same_rows else 0.6, hspace=0.45)
    for k, ax in enumerate(axes.flat):
        if k >= len(nets):
            ax.set_visible(False)
            continue
        net, t = nets[k], tables[nets[k]]
        values = t.to_numpy(dtype=float)
        im = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(SCENARIO_COLUMNS)), [c.split("=")[1] for c in SCENARIO_COLUMNS], fontsize=8)
        ax.set_yticks(range(len(t)), list(t.index) if (k % cols == 0 or not same_rows) else [], fontsize=8)
        ax.set_xlabel("scenario n", fontsize=8)
        mean_ap = maps.get(net, np.nan)
        ax.set_title(
            network_label(net) + ("" if np.isnan(mean_ap) else f"\nclean mAP {mean_ap:.3f}"), fontsize=9
        )
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                colour = "white" if v < 60 else "black"
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="success (%)")
    fig.suptitle(title, fontsize=11, y=1.0, va="bottom")  # above the two-line panel titles
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def shown_vs_size(by_network: dict[str, list[AttackRun]], title: str, path: Path, norm: str = "l2") -> Path:
    """Mean labels shown against mean perturbation size: one point per (network, attack), colour = network,
    marker = attack, and per network the upper envelope (the most labels any of its attacks showed at that size
    or less), which is what compares networks: a higher envelope gives in more for the same perturbation."""
    attacks = sorted({r.attack for runs in by_network.values() for r in runs}, key=attack_sort_key)
    marker = {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(attacks)}
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    for k, (net, runs) in enumerate(by_network.items()):
        colour = f"C{k}"
        pts = sorted(
            (r.metrics.get(f"{norm}_mean", np.nan), r.metrics.get("labels_shown_mean", np.nan), r.attack)
            for r in runs
        )
        pts = [p for p in pts if not (np.isnan(p[0]) or np.isnan(p[1]))]
        if not pts:
            continue
        xs, ys, _ = zip(*pts, strict=True)
        ax.step(xs, np.maximum.accumulate(ys), where="post", color=colour, label=network_label(net))
        for x, y, name in pts:
            ax.plot(x, y, marker[name], color=colour, markersize=6, alpha=0.85, linestyle="none")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel(f"mean {norm.upper()} of the perturbation (pixels in [0, 1])")
    ax.set_ylabel("mean labels shown")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    nets_legend = ax.legend(fontsize=8, title="network (envelope)", title_fontsize=8, loc="upper left")
    ax.add_artist(nets_legend)
    handles = [plt.Line2D([], [], marker=marker[a], color="grey", linestyle="none", label=a) for a in attacks]
    ax.legend(handles=handles, fontsize=7, title="attack", title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path
