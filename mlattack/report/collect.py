"""Read finished attack runs back from the tracking store (the report's only input).

``mlattack attack`` logs one parent run per invocation and one child run per attack; the child carries everything a
table needs (params ``network``/``dataset``/``model_uri``/``avg_labels``/``num_samples``/``num_classes``, metrics
``success/n0..7`` and the norms, the ``samples.csv`` artifact). Names are those of
:mod:`mlattack.tracking.record`; metrics are read back under the accumulator's internal names
(``success_rate_n0``, ``l2_mean``, ...), from stores written before or after the rename. When the same attack was
run several times on one network and dataset, the most recent finished child wins, so re-running an attack updates
the report instead of duplicating rows.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from mlattack.scenarios import NUM_SCENARIOS
from mlattack.tracking.record import (
    ATTACK_EXPERIMENT,
    ATTACK_NAME_TAG,
    PARENT_TAG,
    SAMPLES_CSV,
    SWEEP_BASE_TAG,
    SWEEP_PARAM_TAG,
    SWEEP_VALUE_TAG,
    internal_metrics,
)


@dataclass
class AttackRun:
    """One attack's child run, flattened to what the tables and plots read."""

    run_id: str
    parent_id: str
    attack: str
    network: str
    dataset: str
    model_uri: str
    start_time: int
    avg_labels: float
    num_samples: int
    num_classes: int | None
    metrics: dict[str, float]
    params: dict[str, str]
    sweep: tuple[str, str, float] | None = None  # (base attack, swept argument, value)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def success(self) -> list[float]:
        """Success rate (fraction) in scenarios n = 0..7."""
        return [self.metrics.get(f"success_rate_n{k}", float("nan")) for k in range(NUM_SCENARIOS)]


def network_name(params: dict[str, str]) -> str:
    """The network a run attacked, as tables name it: the class (``mlgcn``), or for a registered model named
    ``<class>-<variant>-<dataset>`` the variant (``mlgcn-effnet``), so a pretrained-trunk model gets its own rows."""
    network, dataset = params.get("network", "unknown"), params.get("dataset", "")
    name = params.get("model_identity", "").rsplit("/", 1)[0]
    if not params.get("model_uri", "").startswith("models:/") or not name.endswith(f"-{dataset}"):
        return network
    variant = name.removesuffix(f"-{dataset}")
    return variant if variant.startswith(f"{network}-") else network


def defended_name(network: str, params: dict[str, str]) -> str:
    """A run on a preprocessing defence (``mlattack attack --defence``) names its own rows: ``mlgcn+jpeg75``, and
    ``mlgcn+jpeg75+adaptive`` for the BPDA/EOT attack, so they never replace the bare network's runs."""
    label = params.get("defence/label")
    if not label:
        return network
    return f"{network}+{label}" + ("+adaptive" if params.get("defence/adaptive") == "True" else "")


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def build_filter(
    network: str | None = None,
    dataset: str | None = None,
    filter_string: str | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> str:
    """One MLflow filter string selecting attack child runs (AND of every condition given)."""
    parts = [f"tags.`{ATTACK_NAME_TAG}` != ''"]
    if network:
        parts.append(f"params.network = {_quote(network)}")
    if dataset:
        parts.append(f"params.dataset = {_quote(dataset)}")
    parts += [f"tags.`{k}` = {_quote(v)}" for k, v in (tags or {}).items()]
    parts += [f"params.`{k}` = {_quote(v)}" for k, v in (params or {}).items()]
    if filter_string and filter_string.strip():
        parts.append(
            f"({filter_string.strip()})" if " or " in filter_string.lower() else filter_string.strip()
        )
    return " and ".join(parts)


def _sweep(tags: dict[str, str]) -> tuple[str, str, float] | None:
    if SWEEP_BASE_TAG not in tags:
        return None
    try:
        return tags[SWEEP_BASE_TAG], tags[SWEEP_PARAM_TAG], float(tags[SWEEP_VALUE_TAG])
    except (KeyError, ValueError):
        return None


def collect_runs(
    client: mlflow.MlflowClient,
    experiment: str = ATTACK_EXPERIMENT,
    network: str | None = None,
    dataset: str | None = None,
    filter_string: str | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    latest_only: bool = True,
) -> list[AttackRun]:
    """Finished attack child runs of ``experiment`` matching the filters: with ``latest_only``, one per
    network/dataset/attack, the latest paper-mode run where there is one (the numbers to quote), else the latest
    run; so paper and fast results are never mixed silently in one table (``--filter "params.mode = 'fast'"``
    reports fast runs)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"--experiment: no experiment named {experiment!r} in the tracking store")
    query = build_filter(network, dataset, filter_string, tags, params)
    found, token = [], None
    while True:
        try:
            page = client.search_runs(
                [exp.experiment_id],
                filter_string=query,
                max_results=1000,
                page_token=token,
                order_by=["attributes.start_time DESC"],
            )
        except mlflow.exceptions.MlflowException as e:
            raise ValueError(f"--filter: MLflow rejected the filter {query!r}: {e.message}") from e
        found += [r for r in page if r.info.status == "FINISHED"]
        token = page.token
        if not token:
            break
    parents: dict[str, dict[str, str]] = {}
    runs = []
    for r in found:
        p, t = r.data.params, r.data.tags
        parent_id = t.get(PARENT_TAG, "")
        if parent_id and parent_id not in parents:
            parents[parent_id] = client.get_run(parent_id).data.params
        parent = parents.get(parent_id, {})
        num_classes = p.get("num_classes", parent.get("num_classes"))
        metrics = internal_metrics(r.data.metrics)
        runs.append(
            AttackRun(
                run_id=r.info.run_id,
                parent_id=parent_id,
                attack=t.get(ATTACK_NAME_TAG, r.info.run_name),
                network=defended_name(network_name({**parent, **p}), {**parent, **p}),
                dataset=p.get("dataset", parent.get("dataset", "unknown")),
                model_uri=p.get("model_uri", parent.get("model_uri", "")),
                start_time=r.info.start_time or 0,
                avg_labels=float(p.get("avg_labels", parent.get("avg_labels", "nan"))),
                num_samples=int(metrics.get("num_samples", p.get("num_samples", 0))),
                num_classes=int(num_classes) if num_classes is not None else None,
                metrics=metrics,
                params={**parent, **p},
                sweep=_sweep(t),
                tags=dict(t),
            )
        )
    if latest_only:
        latest: dict[tuple[str, str, str], AttackRun] = {}
        for run in sorted(runs, key=lambda r: (r.params.get("mode", "paper") == "paper", r.start_time)):
            key = (run.network, run.dataset, run.attack)
            if key in latest and _registered_name(latest[key]) != _registered_name(run):
                warnings.warn(
                    f"report: runs of {_registered_name(latest[key])!r} and {_registered_name(run)!r} both count as "
                    f"victim {run.network!r} (a registered name not of the form <class>-<variant>-{run.dataset} "
                    f"is named by its class); only the later one's {run.attack!r} is reported: register them "
                    f"as <class>-<variant>-{run.dataset}, or report each with --filter \"params.model_uri = '...'\"",
                    stacklevel=2,
                )
            latest[key] = run
        runs = list(latest.values())
    return sorted(runs, key=lambda r: (r.network, r.dataset, attack_sort_key(r.attack)))


def _registered_name(run: AttackRun) -> str:
    """The model a run attacked, without its version (``mlgcn-synthetic``; a checkpoint path as it is)."""
    return (
        run.params.get("model_identity", run.model_uri).rsplit("/", 1)[0]
        if run.model_uri.startswith("models:/")
        else run.model_uri
    )


STUDY_ORDER = ["FGSM", "FGM", "BIM", "PGD", "MIFGSM", "SLIDE", "MLCW", "MLDP", "MLALP"]


def base_attack(name: str) -> str:
    """The study attack a run name belongs to (``MLCW-reduced`` -> ``MLCW``, ``PGD[eps=0.01]`` -> ``PGD``)."""
    stem = re.split(r"[\[\-_ ]", name, maxsplit=1)[0].upper().replace("-", "")
    return stem if stem in STUDY_ORDER else name.split("[", 1)[0]


def attack_sort_key(name: str) -> tuple:
    """The study's row order, then other names alphabetically; sweep points by their numeric value."""
    base = base_attack(name)
    rank = STUDY_ORDER.index(base) if base in STUDY_ORDER else len(STUDY_ORDER)
    m = re.search(r"\[[^=\]]+=([^\]]+)\]", name)
    try:
        value = float(m.group(1)) if m else float("-inf")
    except ValueError:
        value = float("-inf")
    return rank, base, name.split("[", 1)[0], value, name


def groups(runs: list[AttackRun]) -> dict[tuple[str, str], list[AttackRun]]:
    """Runs per (network, dataset), in table order."""
    out: dict[tuple[str, str], list[AttackRun]] = {}
    for r in runs:
        out.setdefault((r.network, r.dataset), []).append(r)
    return out


def load_samples(client: mlflow.MlflowClient, run: AttackRun, dst: str | Path) -> pd.DataFrame | None:
    """The run's per-sample table (``samples.csv``), or None when the run has none."""
    if SAMPLES_CSV not in {a.path for a in client.list_artifacts(run.run_id)}:
        return None
    folder = Path(dst) / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    path = client.download_artifacts(run.run_id, SAMPLES_CSV, str(folder))
    return pd.read_csv(path, keep_default_na=False, dtype={"true_labels": str, "labels_shown_names": str})


def runs_frame(runs: list[AttackRun]) -> pd.DataFrame:
    """Which runs a report used (written as ``runs.csv`` so every number can be traced to its run)."""
    return pd.DataFrame(
        [
            {
                "network": r.network,
                "dataset": r.dataset,
                "attack": r.attack,
                "run_id": r.run_id,
                "parent_run_id": r.parent_id,
                "model_uri": r.model_uri,
                "num_samples": r.num_samples,
                "avg_labels": r.avg_labels,
                "mode": r.params.get("mode", "paper"),
                "fast_network": r.params.get("fast_network", ""),
            }
            for r in runs
        ]
    )
