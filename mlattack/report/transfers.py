"""The transferability table: attack runs' adversarial examples re-judged on other models (``mlattack evaluate``).

A transfer run's nested runs (experiment ``mlattack-transfer``) each hold one attack's examples judged on the target
model (``success/n*``, ``labels_shown``) and, as ``clean/...``, the clean images of the same samples judged on it:
the baseline a transfer is read against (a target that already shows many labels on clean images needs no attack).
The report shows the transfers of the attack runs it reports on (a transfer's ``mlattack.source_run`` is one of
them), so a re-run attack hides transfers of its stale examples until they are evaluated again; of several
evaluations of one attack run on one model, the newest wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import nan

import mlflow
import pandas as pd

from mlattack.report.collect import AttackRun, attack_sort_key
from mlattack.report.tables import SCENARIO_COLUMNS, success_frame
from mlattack.tracking.record import (
    ATTACK_NAME_TAG,
    KIND_TAG,
    SOURCE_RUN_TAG,
    TRANSFER_EXPERIMENT,
    internal_metrics,
)

CLEAN_PREFIX = "clean/"
BASELINE_ROW = "clean images (baseline)"
ARROW = " → "


@dataclass
class TransferRun:
    """One attack's examples judged on one target model."""

    run_id: str
    source_run: str  # the attack's own run, whose adversarial.npz was judged
    attack: str
    dataset: str
    source: str  # the attacked model (registry name/version, or checkpoint path)
    target: str  # the model that judged the examples
    start_time: int
    metrics: dict[str, float]  # internal names (success_rate_n0, labels_shown_mean, num_samples)
    clean: dict[
        str, float
    ]  # success and labels shown on the clean images; {} for runs logged before the baseline

    @property
    def pair(self) -> str:
        return f"{self.source}{ARROW}{self.target}"


def collect_transfers(
    client: mlflow.MlflowClient, attack_runs: list[AttackRun], experiment: str = TRANSFER_EXPERIMENT
) -> list[TransferRun]:
    """The finished transfer runs of ``attack_runs`` (newest per attack run and target model)."""
    exp = client.get_experiment_by_name(experiment)
    sources = {r.run_id: r for r in attack_runs}
    if exp is None or not sources:
        return []
    query = f"tags.`{KIND_TAG}` = 'transfer' and tags.`{ATTACK_NAME_TAG}` != ''"
    found, token = [], None
    while True:  # every page: a store can hold more transfer runs than one page
        page = client.search_runs([exp.experiment_id], query, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])  # fmt: skip
        found += page
        if not (token := page.token):
            break
    latest: dict[tuple[str, str], TransferRun] = {}
    for r in found:
        source = sources.get(r.data.tags.get(SOURCE_RUN_TAG, ""))
        if source is None or r.info.status != "FINISHED":
            continue
        p, m = r.data.params, r.data.metrics
        clean = {k.removeprefix(CLEAN_PREFIX): v for k, v in m.items() if k.startswith(CLEAN_PREFIX)}
        run = TransferRun(
            run_id=r.info.run_id,
            source_run=source.run_id,
            attack=source.attack,
            dataset=p.get("dataset", source.dataset),
            source=p.get("source_model", source.model_uri),
            target=p.get("model_identity", p.get("model_uri", "?")),
            start_time=r.info.start_time or 0,
            metrics=internal_metrics({k: v for k, v in m.items() if not k.startswith(("clean/", "source/"))}),
            clean=internal_metrics(clean),
        )
        latest[(run.source_run, run.target)] = run
    return sorted(latest.values(), key=lambda t: (t.dataset, t.pair, attack_sort_key(t.attack)))


def with_baseline(rows: dict[str, dict[str, float]], clean: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The success table (N, success % in n = 0..7, labels shown) of ``rows`` (attack -> internal metric names),
    the clean-image baseline first: that of the attack with the most samples (every attack's samples are the first
    N of one selection, so the widest covers the others)."""
    widest = max(clean, key=lambda a: rows[a].get("num_samples", 0), default=None)
    if widest is not None:
        rows = {**rows, BASELINE_ROW: {**clean[widest], "num_samples": rows[widest].get("num_samples", nan)}}
    frame = success_frame(rows, ("labels shown",))
    return frame.loc[sorted(frame.index, key=lambda a: (a != BASELINE_ROW, attack_sort_key(a)))]


def transfer_table(runs: list[TransferRun]) -> pd.DataFrame:
    """Rows per (source → target) pair: the clean-image baseline first, then each attack: N, success (%) in
    scenarios n = 0..7 and mean labels shown, all judged on the target model (:func:`with_baseline`)."""
    frames = []
    for pair in dict.fromkeys(t.pair for t in runs):
        group = [t for t in runs if t.pair == pair]
        frame = with_baseline(
            {t.attack: t.metrics for t in group}, {t.attack: t.clean for t in group if t.clean}
        )
        frame = frame.reset_index()
        frame.index = pd.Index([pair] * len(frame), name="source → target")
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["attack", "N", *SCENARIO_COLUMNS, "labels shown"])
    return pd.concat(frames)


def transfer_sections(
    client: mlflow.MlflowClient, attack_runs: list[AttackRun]
) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(file stem, heading, caption, table) per dataset with transfer runs, for the report's index."""
    runs = collect_transfers(client, attack_runs)
    out = []
    for ds in dict.fromkeys(t.dataset for t in runs):
        table = transfer_table([t for t in runs if t.dataset == ds])
        baseline = (
            "" if (table["attack"] == BASELINE_ROW).any() else " (no clean-image baseline: re-evaluate)"
        )
        caption = (
            f"Transferability on {ds}: adversarial examples made on the source model, judged on the target "
            f"model — success (%) and mean labels shown; '{BASELINE_ROW}' is the target on the clean images of "
            f"the same samples{baseline}"
        )
        out.append((f"transfer_{ds}", f"## Transferability: {ds}", caption, table))
    return out
