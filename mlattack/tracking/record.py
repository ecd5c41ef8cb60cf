"""The attack-run record: every experiment, tag, param and metric name an attack run is written and read by.

One home for the names, so the runner that logs a run, the report that reads it and ``mlattack evaluate`` that
re-judges it cannot drift apart. The accumulator (:class:`~mlattack.evaluation.metrics.ShowManyLabels`) keeps its
own short internal names (``success_rate_n0``, ``l2_mean``, ...); :func:`mlflow_metric` maps them to names that
group and read in the MLflow UI (``success/n0``, ``norm/l2``, ...) and :func:`internal_metric` maps both the new
names and those of stores written before the rename back, so old runs still report.
"""

from __future__ import annotations

import json
import math
import re

from mlattack.scenarios import NUM_SCENARIOS
from mlattack.tracking.network_files import constructor_config

ATTACK_EXPERIMENT = "mlattack-attacks"
TRANSFER_EXPERIMENT = "mlattack-transfer"
EXPERIMENT_DESCRIPTIONS = {
    ATTACK_EXPERIMENT: "`mlattack attack`: one parent run per invocation (its description is the success table), "
    "one nested run per attack. Metrics: `success/n0`..`success/n7` (fraction of samples showing at least "
    "expLabels_n labels), `clean/success/n*` and `clean/labels_shown` (the same samples' clean images: the "
    "baseline that needs no attack), `n_at_50pct` (largest n with success >= 50 %, -1 if none), `labels_shown`, "
    "`norm/*` "
    "(over all samples) and `norm_success/*` (over the successes of scenario n), `time/*`, `cost/*` (the "
    "attacked network's forward and backward passes per sample inside the attack, judging not included, and the "
    "attack's peak memory per batch above its start: CUDA max_memory_allocated, CPU resident-set high-water mark).",
    TRANSFER_EXPERIMENT: "`mlattack evaluate`: the adversarial examples of an attack run re-judged on another model "
    "(transferability). Same metric names as the attack runs; `source/...` repeats the attacked model's numbers.",
}

#: the MLflow UI shows an experiment with this kind as training runs (a runs table), not as a GenAI overview
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
#: a saved runs-table view (experiment tag ``mlflow.sharedViewState.<key>``, opened with ``?viewStateShareKey=``)
COMPARE_VIEW = "compare-attacks"
RUN_KEY_TAG = "mlattack.run_key"
ATTACK_NAME_TAG = "mlattack.attack_name"
WRITER_TAG = "mlattack.writer"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run / experiment / model description the MLflow UI shows
SWEEP_BASE_TAG, SWEEP_PARAM_TAG, SWEEP_VALUE_TAG = (
    "mlattack.sweep_base",
    "mlattack.sweep_param",
    "mlattack.sweep_value",
)
SOURCE_RUN_TAG = "mlattack.source_run"  # a transfer run: the attack run whose examples it re-judged
KIND_TAG = "mlattack.kind"  # "attack" or "transfer"

#: artifacts of a child run
SAMPLES_CSV, PANEL_PNG, EXAMPLES_NPZ, ATTACK_YAML = (
    "samples.csv",
    "panel.png",
    "adversarial.npz",
    "attack.yaml",
)

#: internal name -> MLflow name, for the names that are not built from a pattern below
_PLAIN = {
    "labels_shown_mean": "labels_shown",
    "iterations_mean": "iterations",
    "target_reached_rate": "target_reached",
    "seconds_per_sample": "time/seconds_per_sample",
    "forwards_per_sample": "cost/forward_passes_per_sample",
    "backwards_per_sample": "cost/backward_passes_per_sample",
    "peak_memory_mb": "cost/peak_memory_mb",
}
_PLAIN_BACK = {v: k for k, v in _PLAIN.items()}
CURVE = "curve/success_vs_n"  # success rate with step = n: the curve over the scenarios
HEADLINE = "n_at_50pct"
ATTACK_SECONDS = "time/attack_seconds"
#: the attack parent run's metric: the clean val mAP of the model as attacked (behind its defence, if any)
CLEAN_MAP_METRIC = "clean_val_mAP"
#: the name runs before every victim had it used (defended runs only); read by the report for older stores
OLD_DEFENCE_MAP_METRIC = "defence/clean_val_mAP"


def compare_view_state(experiment: str = ATTACK_EXPERIMENT) -> str:
    """The saved view: one row per attack (or transfer) run, no parents, ordered by the judged model so each model's
    attacks sit together. No grouping: a group row aggregates its runs, and an average of one attack's eps 0.3, another's
    1.0 and a third's 300 (different norms) is no number. Beside the name come the attack's norm, budget and
    iterations, then the eight success rates (narrow, so all fit a 1600-pixel screen), then the headline, labels shown,
    norms and time; in the transfer experiment also the target model's labels shown on the clean images."""
    params = [f"params.`attack.{k}`" for k in ("norm", "eps", "iterations")]
    rates = [f"metrics.`{success_key(n)}`" for n in range(NUM_SCENARIOS)]
    rest = [f"metrics.`{k}`" for k in (HEADLINE, "labels_shown", "norm/l2", "norm/linf", ATTACK_SECONDS)]
    if experiment == TRANSFER_EXPERIMENT:
        rest.insert(2, "metrics.`clean/labels_shown`")
    columns = [*params, *rates, *rest]
    widths = {**{c: 84 for c in params}, **{c: 82 for c in rates}}
    return json.dumps(
        {
            "selectedColumns": columns,
            "columnOrder": columns,
            "columnWidths": widths,
            "searchFilter": f"tags.`{ATTACK_NAME_TAG}` LIKE '%'",  # the nested runs: one per attack
            "orderByKey": "params.`model_identity`",
            "orderByAsc": True,
        }
    )


def compare_view_link(experiment_id: str) -> str:
    return f"[Compare the attacks side by side](#/experiments/{experiment_id}/runs?viewStateShareKey={COMPARE_VIEW})"


def success_key(n: int) -> str:
    return f"success/n{n}"


def mlflow_metric(name: str) -> str:
    """The MLflow name of an internal metric name (unknown names pass unchanged); the clean-image baseline of a
    metric is ``clean/`` + its name (``clean_success_rate_n0`` -> ``clean/success/n0``), as transfer runs log it."""
    if name.startswith("clean_"):
        return "clean/" + mlflow_metric(name.removeprefix("clean_"))
    if m := re.fullmatch(r"success_rate_n(\d+)", name):
        return success_key(int(m.group(1)))
    if m := re.fullmatch(r"(\w+?)_mean_success_n(\d+)", name):
        return f"norm_success/{m.group(1)}_n{m.group(2)}"
    if name in _PLAIN:
        return _PLAIN[name]
    if m := re.fullmatch(r"(l2|l1|linf|rmsd|mean_abs)_mean", name):
        return f"norm/{m.group(1)}"
    return name


def internal_metric(key: str) -> str:
    """The internal name of an MLflow metric, new or old (``success_rate_n0`` stays ``success_rate_n0``)."""
    if key.startswith("clean/"):
        return "clean_" + internal_metric(key.removeprefix("clean/"))
    if m := re.fullmatch(r"success/n(\d+)", key):
        return f"success_rate_n{m.group(1)}"
    if m := re.fullmatch(r"norm_success/(\w+)_n(\d+)", key):
        return f"{m.group(1)}_mean_success_n{m.group(2)}"
    if m := re.fullmatch(r"norm/(\w+)", key):
        return f"{m.group(1)}_mean"
    return _PLAIN_BACK.get(key, key)


def internal_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A run's metrics under internal names; a new name wins over an old one for the same quantity."""
    out = {internal_metric(k): v for k, v in metrics.items() if internal_metric(k) == k}
    out.update({internal_metric(k): v for k, v in metrics.items() if internal_metric(k) != k})
    return out


def headline(values: dict[str, float], threshold: float = 0.5) -> float:
    """The largest scenario n whose success rate is at least ``threshold`` (-1 when none is)."""
    ok = [n for n in range(NUM_SCENARIOS) if values.get(f"success_rate_n{n}", 0.0) >= threshold]
    return float(max(ok)) if ok else -1.0


def logged_metrics(values: dict[str, float]) -> dict[str, float]:
    """What an attack (or transfer) run logs as single values: every metric under its MLflow name, plus the
    headline and the attack's own wall time (its per-sample seconds times the samples)."""
    out = {mlflow_metric(k): float(v) for k, v in values.items() if math.isfinite(float(v))}
    out[HEADLINE] = headline(values)
    if "seconds_per_sample" in values and "num_samples" in values:
        out[ATTACK_SECONDS] = float(values["seconds_per_sample"]) * float(values["num_samples"])
    return out


# -- attack parameters as logged ------------------------------------------------------------------------------------
#: the attacks' names for their iteration count; logged as one name, ``attack.iterations``
ITERATION_ARGS = ("nb_iter", "max_iter")


def attack_params(hyperparameters: dict[str, object], norm: str | None = None) -> dict[str, object]:
    """An attack's settings as MLflow params: ``attack.<name>``, with the norm its ``eps`` is measured in
    (``attack.norm``: a ``norm`` setting, else the ``norm`` the attack class declares) and one name for the
    iteration count (``attack.iterations``)."""
    hp = dict(hyperparameters)
    norm = hp.pop("norm", None) or norm
    out: dict[str, object] = {"attack.norm": str(norm).lower() if norm else "n/a"}
    for arg in ITERATION_ARGS:
        if arg in hp:
            out["attack.iterations"] = hp.pop(arg)
    out.update({f"attack.{k}": v for k, v in hp.items()})
    return out


def attack_config(attack: object) -> dict:
    """The attack as it ran, in the ``class_path``/``init_args`` form of ``configs/attack/*.yaml``."""
    return constructor_config(attack)
