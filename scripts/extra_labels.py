"""Labels an attack adds beyond the truth, per victim and attack, and the two victims compared on the samples both
selected (docs/DEFENCES.md, "64 px demo"). Where a model shows few more labels than a sample truly has (ML-APGD at
L∞ ε 0.03 on the demo), "labels shown" mixes kept true labels with added false ones; this splits them:

* shown: mean labels shown [95 % t-interval];
* added: mean false labels shown (shown, not true) [95 % t-interval];
* ≥1 added: samples showing at least one false label, % [95 % Wilson interval];
* paired (``--pair A B``): over the samples both victims' runs hold, mean labels shown under each, the mean
  difference A − B [95 % t-interval] and the sign test (samples showing more under A / under B, ties dropped).

    PYTHONPATH=$PWD .venv/bin/python scripts/extra_labels.py --experiment mlattack-robustness-demo64-all \
        --pair mlgcn mlgcn-at
"""

from __future__ import annotations

import argparse
import math
import tempfile

import mlflow
import numpy as np
import pandas as pd
from scipy import stats

from mlattack.intervals import format_rate
from mlattack.report.collect import collect_runs, load_samples
from mlattack.report.paired import exact_p
from mlattack.tracking.store import default_tracking_uri


def label_set(cell: str) -> set[str]:
    return {x for x in str(cell).split(";") if x}


def mean_ci(values: np.ndarray) -> str:
    n = len(values)
    if n < 2:
        return f"{values.mean():.2f}" if n else "–"
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return f"{values.mean():.2f} [{values.mean() - half:.2f}–{values.mean() + half:.2f}]"


def markdown(rows: list[dict[str, object]]) -> str:
    head = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows])


def per_sample(frame: pd.DataFrame) -> pd.DataFrame:
    """Per sample id: labels shown and false labels shown (the judged adversarial image)."""
    added = [
        len(label_set(s) - label_set(t))
        for s, t in zip(frame["labels_shown_names"], frame["true_labels"], strict=True)
    ]
    out = pd.DataFrame({"shown": frame["labels_shown"].astype(int).to_numpy(), "added": added})
    out.index = pd.Index(frame["sample_id"].astype(str), name="sample_id")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tracking_uri", default=None)
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"), help="two victims (report names) to pair")
    args = parser.parse_args()
    client = mlflow.MlflowClient(args.tracking_uri or default_tracking_uri())
    runs = collect_runs(client, args.experiment)
    frames, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            samples = load_samples(client, r, tmp)
            if samples is None:
                continue
            s = frames[r.network, r.attack] = per_sample(samples)
            rows.append({"victim": r.network, "attack": r.attack, "N": len(s), "shown": mean_ci(s["shown"].to_numpy()),
                         "added": mean_ci(s["added"].to_numpy()),
                         "≥1 added": format_rate(int((s["added"] > 0).sum()), len(s))})  # fmt: skip
    print(markdown(rows))
    if not args.pair:
        return
    a_net, b_net = args.pair
    paired = []
    for attack in sorted({k[1] for k in frames}):
        if (a_net, attack) not in frames or (b_net, attack) not in frames:
            continue
        a, b = frames[a_net, attack], frames[b_net, attack]
        common = a.index.intersection(b.index)
        a, b = a.loc[common], b.loc[common]
        diff = a["shown"].to_numpy() - b["shown"].to_numpy()
        more_a, more_b = int((diff > 0).sum()), int((diff < 0).sum())
        paired.append({"attack": attack, "pairs": len(common), f"shown {a_net}": f"{a['shown'].mean():.2f}",
                       f"shown {b_net}": f"{b['shown'].mean():.2f}", f"{a_net} − {b_net}": mean_ci(diff),
                       f"added {a_net}": f"{a['added'].mean():.2f}", f"added {b_net}": f"{b['added'].mean():.2f}",
                       "more under A / B": f"{more_a}/{more_b}", "sign test p": f"{exact_p(more_a, more_b):.2g}"})  # fmt: skip
    print()
    print(markdown(paired))


if __name__ == "__main__":
    main()
