"""Paired tests for the comparisons the study makes, where two attacks ran on the same samples.

Two success rates over the same N samples are not independent: a sample that resists one attack tends to resist
the other, so comparing two Wilson intervals is needlessly weak (and their overlap is no test at all). The samples
are paired by ``sample_id`` (``samples.csv`` of each run) and only the discordant ones carry information:

* per scenario n, an exact McNemar test: b samples succeeded only under A, c only under B; under "no difference"
  b ~ Binomial(b + c, 1/2), so p is the two-sided binomial test of b (``scipy.stats.binomtest``);
* over labels shown, a sign test: how many samples show more labels under A, how many under B (ties dropped).

The comparisons: one-step vs iterative (FGSM vs BIM, PGD and MI-FGSM: the same L∞ budget family), the study's
code vs its corrected variant (``X`` vs ``X-corrected``) on one network, an ablation's rows vs its ``X-reference``
row, and the same attack on two networks of one
dataset (ML-GCN vs ML-LIW), paired over the samples both selections hold.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from scipy.stats import binomtest

from mlattack.report.collect import AttackRun, attack_sort_key, base_attack, load_samples
from mlattack.report.tables import network_label
from mlattack.scenarios import NUM_SCENARIOS, scenario_thresholds

ONE_STEP, ITERATIVE = ("FGSM",), ("BIM", "PGD", "MIFGSM")


def exact_p(b: int, c: int) -> float:
    """Two-sided exact binomial p of b successes in b + c trials at 1/2 (1.0 when there is no discordant pair)."""
    return float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0


def sample_successes(samples: pd.DataFrame, avg_labels: float, num_classes: int) -> pd.DataFrame:
    """Per sample id: labels shown and success in each scenario (a failed attack never succeeds), the metric's
    rule (:func:`mlattack.scenarios.scenario_success`)."""
    thresholds = scenario_thresholds(avg_labels, num_classes).numpy()
    shown = samples["labels_shown"].to_numpy(int)
    valid = samples["valid"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    won = (shown[:, None] >= thresholds[None, :]) & valid[:, None]
    out = pd.DataFrame(won, columns=[f"n={k}" for k in range(NUM_SCENARIOS)])
    out["labels shown"] = shown
    out.index = pd.Index(samples["sample_id"].astype(str), name="sample_id")
    return out[~out.index.duplicated(keep="last")]


def paired_test(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, object]:
    """The paired comparison of two :func:`sample_successes` frames over their common sample ids: ``pairs``,
    ``A more`` / ``B more`` (labels shown) with the sign test's ``p``, and per scenario ``n=k``: (b, c, p)."""
    common = a.index.intersection(b.index)
    a, b = a.loc[common], b.loc[common]
    diff = a["labels shown"].to_numpy(int) - b["labels shown"].to_numpy(int)
    more_a, more_b = int((diff > 0).sum()), int((diff < 0).sum())
    out: dict[str, object] = {
        "pairs": len(common),
        "A more": more_a,
        "B more": more_b,
        "p": exact_p(more_a, more_b),
    }
    for k in range(NUM_SCENARIOS):
        col = f"n={k}"
        only_a = int((a[col] & ~b[col]).sum())
        only_b = int((b[col] & ~a[col]).sum())
        out[col] = (only_a, only_b, exact_p(only_a, only_b))
    return out


def comparisons(runs: list[AttackRun]) -> list[tuple[str, AttackRun, AttackRun]]:
    """(kind, A, B) for every comparison the study makes that these runs allow. Sweep and grid points
    (``BIM[eps=0.1]``) are compared only network vs network: the same attack at the same budget on two victims (a
    standard and an adversarially trained network, say)."""
    out = []
    by_group: dict[tuple[str, str], dict[str, AttackRun]] = {}
    for r in runs:
        by_group.setdefault((r.network, r.dataset), {})[r.attack] = r
    for all_points in by_group.values():
        group = {name: r for name, r in all_points.items() if "[" not in name}
        for a, b in itertools.product(sorted(group, key=attack_sort_key), repeat=2):
            if base_attack(a) in ONE_STEP and base_attack(b) in ITERATIVE and "corrected" not in a + b:
                out.append(("one-step vs iterative", group[a], group[b]))
        for name, run in group.items():
            reference = name.replace("-corrected", "")
            if reference != name and reference in group:
                out.append(("reference vs corrected", group[reference], run))
        out += _against_reference_rows(group)
    datasets = sorted({ds for _, ds in by_group})
    for ds in datasets:
        nets = sorted(net for net, d in by_group if d == ds)
        for n1, n2 in itertools.combinations(nets, 2):
            for name in sorted(set(by_group[n1, ds]) & set(by_group[n2, ds]), key=attack_sort_key):
                out.append(("network vs network", by_group[n1, ds][name], by_group[n2, ds][name]))
    return out


def _against_reference_rows(group: dict[str, AttackRun]) -> list[tuple[str, AttackRun, AttackRun]]:
    """An ablation names its baseline ``X-reference`` and its rows ``X-<switch>`` (configs/ablation-mlalp.yaml):
    each row is compared with that baseline, the corrected variant as "reference vs corrected"."""
    out = []
    for reference in sorted(n for n in group if n.endswith("-reference")):
        stem = reference.removesuffix("reference")
        for name in sorted(n for n in group if n.startswith(stem) and n != reference):
            kind = "reference vs corrected" if name == f"{stem}corrected" else "reference vs ablation row"
            out.append((kind, group[reference], group[name]))
    return out


def _label(kind: str, a: AttackRun, b: AttackRun) -> str:
    if kind == "network vs network":
        return f"{a.attack}: {network_label(a.network)} vs {network_label(b.network)} / {a.dataset}"
    return f"{a.attack} vs {b.attack} ({network_label(a.network)} / {a.dataset})"


def paired_table(client: mlflow.MlflowClient, runs: list[AttackRun], tmp: str | Path) -> pd.DataFrame | None:
    """One row per comparison with paired samples: kind, pairs, the sign test on labels shown and, per scenario,
    "b/c p" (b = only A succeeded, c = only B); None when no comparison applies or no run kept its samples."""
    rows = {}
    cache: dict[str, pd.DataFrame | None] = {}

    def successes(run: AttackRun) -> pd.DataFrame | None:
        if run.run_id not in cache:
            frame = load_samples(client, run, tmp) if run.num_classes else None
            ok = frame is not None and len(frame) and {"sample_id", "labels_shown", "valid"} <= set(frame)
            cache[run.run_id] = sample_successes(frame, run.avg_labels, run.num_classes) if ok else None
        return cache[run.run_id]

    for kind, a, b in comparisons(runs):
        sa, sb = successes(a), successes(b)
        if sa is None or sb is None:
            continue
        test = paired_test(sa, sb)
        if not test["pairs"]:
            continue
        rows[_label(kind, a, b)] = {
            "kind": kind,
            "pairs": test["pairs"],
            "shown: A more": test["A more"],
            "shown: B more": test["B more"],
            "sign test p": test["p"],
            **{f"n={k}": "{}/{} p={:.2g}".format(*test[f"n={k}"]) for k in range(NUM_SCENARIOS)},
        }
    if not rows:
        return None
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "A vs B"
    return frame.replace({np.nan: None})


CAPTION = (
    "Paired tests, A vs B on the samples both ran on ('pairs', matched by sample id): a sign test on the labels "
    "shown (samples showing more under A / under B, ties dropped) and, per scenario n, an exact McNemar test "
    "'b/c p' — b samples succeeded only under A, c only under B, p the two-sided binomial test of b in b + c at "
    "1/2. p is not corrected for the number of comparisons"
)
