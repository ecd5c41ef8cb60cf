"""``mlattack evaluate``: the adversarial examples an attack run stored, re-judged on another model.

Transferability: an attack run keeps every adversarial image (``adversarial.npz`` in each attack's run); this
command feeds them to another network — ML-LIW for examples made on ML-GCN, say — and scores them with the same
scenarios and thresholds as the attack run (its avgLabels and the number of classes). The clean images of the same
samples (stored beside them) are judged on that network too: the baseline a transfer is read against (a target
that already shows many labels on clean images needs no attack). The result is a new MLflow run in experiment
``mlattack-transfer``, linked to the attack run (tag ``mlattack.source_run``, description) and to both models (run
inputs), with one nested run per attack (``clean/...`` holds the baseline) and the success tables as its
description.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import torch

from mlattack.report.tables import success_frame, to_markdown
from mlattack.report.transfers import BASELINE_ROW, with_baseline
from mlattack.rundir.examples import Examples, load_examples
from mlattack.scenarios import SUCCESS_RATE_KEYS, predicted_positive, scenario_success, scenario_thresholds
from mlattack.tracking import attack_runs as runs
from mlattack.tracking.lineage import all_tags, log_lineage_inputs, model_lineage, run_link
from mlattack.tracking.record import (
    ATTACK_NAME_TAG,
    EXAMPLES_NPZ,
    KIND_TAG,
    NOTE_TAG,
    PARENT_TAG,
    SOURCE_RUN_TAG,
    TRANSFER_EXPERIMENT,
    mlflow_metric,
    success_key,
)
from mlattack.tracking.registry import load_network, weights_digest
from mlattack.tracking.store import check_tracking_uri, default_tracking_uri

HELP = "re-judge an attack run's stored adversarial examples on another model (transferability)"


@dataclass
class TransferReport:
    """What ``evaluate_transfer`` returns: the new runs and per-attack metrics (target and attacked model)."""

    run_id: str
    child_run_ids: dict[str, str]
    metrics: dict[str, dict[str, float]]  # on the target model, internal names (success_rate_n0, ...)
    source_metrics: dict[str, dict[str, float]]  # the same samples as judged on the attacked model
    table: str
    clean_metrics: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # clean images on the target model


def judge(
    net: torch.nn.Module, ex: Examples, avg_labels: float, batch_size: int, device, clean: bool = False
) -> dict[str, float]:
    """Success per scenario, labels shown and sample count of ``ex``'s adversarial (or ``clean``) images on
    ``net`` (fp32, the study's rule)."""
    thresholds = scenario_thresholds(avg_labels, len(ex.class_names))
    images = ex.clean_images if clean else ex.images
    shown = []
    with torch.no_grad():
        for i in range(0, len(ex), batch_size):
            logits = net(images(slice(i, i + batch_size)).to(device)).float()
            if logits.shape[-1] != len(ex.class_names):
                raise ValueError(
                    f"--model predicts {logits.shape[-1]} labels but the examples have {len(ex.class_names)} "
                    "classes; evaluate on a model of the same dataset"
                )
            shown.append(predicted_positive(logits).sum(1).cpu())
    return rates(torch.cat(shown), thresholds)


def rates(shown: torch.Tensor, thresholds: torch.Tensor) -> dict[str, float]:
    won = scenario_success(shown, thresholds).double().mean(0)
    out = {key: float(v) for key, v in zip(SUCCESS_RATE_KEYS, won, strict=True)}
    return {**out, "labels_shown_mean": float(shown.double().mean()), "num_samples": float(len(shown))}


def _attack_runs(client: mlflow.MlflowClient, run_id: str) -> tuple[mlflow.entities.Run, list]:
    """(parent, [child runs]) for a parent attack run or one of its attack runs."""
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        raise ValueError(f"--run {run_id}: no such run in this tracking store") from e
    if PARENT_TAG in run.data.tags:
        return client.get_run(run.data.tags[PARENT_TAG]), [run]
    children = runs.child_runs(client, run.info.experiment_id, run_id)
    if not children:
        raise ValueError(f"--run {run_id}: not an `mlattack attack` run (it has no attack runs)")
    return run, [client.get_run(c) for _, c in sorted(children.items())]


def _download(client: mlflow.MlflowClient, run, folder: str) -> Examples:
    if EXAMPLES_NPZ not in {a.path for a in client.list_artifacts(run.info.run_id)}:
        raise ValueError(
            f"attack run {run.info.run_id} ({run.info.run_name}) stored no {EXAMPLES_NPZ}: run the attack with "
            "this mlattack version and keep_examples=true to evaluate its examples on another model"
        )
    return load_examples(client.download_artifacts(run.info.run_id, EXAMPLES_NPZ, folder))


def evaluate_transfer(
    run: str,
    model: str,
    tracking_uri: str | None = None,
    experiment: str = TRANSFER_EXPERIMENT,
    batch_size: int = 50,
    device: str = "auto",
) -> TransferReport:
    """Re-judge the examples of attack run ``run`` (a parent or one attack) on ``model``; log and return the table."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    tracking_uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    parent, children = _attack_runs(client, run)
    target = model_lineage(client, model, runs.model_reference(model, client))
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    net = load_network(model, tracking_uri).to(dev).eval()
    metrics, source, clean = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for child in children:
            name = child.data.tags.get(ATTACK_NAME_TAG, child.info.run_name)
            ex = _download(client, child, str(Path(tmp) / child.info.run_id))
            avg = float(child.data.params.get("avg_labels", parent.data.params.get("avg_labels")))
            metrics[name] = judge(net, ex, avg, batch_size, dev)
            if ex.clean is not None:  # examples stored before clean images were kept have no baseline
                clean[name] = judge(net, ex, avg, batch_size, dev, clean=True)
            source[name] = rates(
                torch.from_numpy(ex.shown).sum(1), scenario_thresholds(avg, len(ex.class_names))
            )
    p = {**parent.data.params, **children[0].data.params}
    src = model_lineage(client, p.get("model_uri", ""), p.get("model_identity", p.get("model_uri", "")))
    exp_id = runs.experiment_id(client, experiment, tracking_uri)
    context = {"source_run": parent.info.run_id, "source_model_uri": src.uri, "source_model": src.reference,
               **target.params(), "model_digest": weights_digest(net), "dataset": p.get("dataset", "?"),
               "network": type(net).__name__.lower(), "source_network": p.get("network", "?"),
               "avg_labels": p.get("avg_labels", "?"), "device": str(dev)}  # fmt: skip
    tags = {KIND_TAG: "transfer", SOURCE_RUN_TAG: parent.info.run_id, **all_tags(None, "mlattack evaluate")}
    name = f"transfer-{p.get('network', 'model')}-to-{target.reference.split('/')[0]}-{time.strftime('%Y%m%d-%H%M%S')}"
    rid = client.create_run(exp_id, run_name=name.replace(".ckpt", ""), tags=tags).info.run_id
    child_ids: dict[str, str] = {}
    try:
        runs.log_params(client, rid, context)
        split = _split(children[0])  # the data split the examples come from, as the runs' dataset input
        log_lineage_inputs(client, rid, target, split, context="transfer")
        log_lineage_inputs(client, rid, src)
        for child in children:
            attack = child.data.tags.get(ATTACK_NAME_TAG, child.info.run_name)
            ctags = {**tags, PARENT_TAG: rid, ATTACK_NAME_TAG: attack, SOURCE_RUN_TAG: child.info.run_id}
            cid = client.create_run(exp_id, run_name=attack, tags=ctags).info.run_id
            child_ids[attack] = cid
            attack_params = {k: v for k, v in child.data.params.items() if k.startswith("attack.")}
            runs.log_params(client, cid, {**context, **attack_params, "source_attack_run": child.info.run_id})
            log_lineage_inputs(client, cid, target, _split(child), context="transfer")
            src_metrics = [
                (f"source/{success_key(k)}", source[attack][key]) for k, key in enumerate(SUCCESS_RATE_KEYS)
            ]
            if attack in clean:
                src_metrics += [(f"clean/{k}", v) for k, v in clean_logged(clean[attack]).items()]
            for key, value in src_metrics:
                client.log_metric(cid, key, value)
            data = _split(child)
            runs.log_results(client, cid, metrics[attack], target.model_id, data[:2] if data else None)
            client.set_terminated(cid, "FINISHED")
        table = _table(metrics, source, clean)
        link = f"[attack run]({run_link(parent.info.experiment_id, parent.info.run_id)})"
        note = (
            f"Adversarial examples of the {link} (made on {src.link()}) judged on {target.link()}.\n\n{table}"
        )
        client.set_tag(rid, NOTE_TAG, note[:7900])
        client.log_text(rid, table + "\n", "transfer_table.md")
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        runs.close_all(client, rid, child_ids, "FAILED")
        raise
    return TransferReport(rid, child_ids, metrics, source, table, clean)


def clean_logged(values: dict[str, float]) -> dict[str, float]:
    """The baseline's MLflow names under ``clean/``: its success rates and labels shown."""
    keys = [*SUCCESS_RATE_KEYS, "labels_shown_mean"]
    return {mlflow_metric(k): values[k] for k in keys}


def _split(run) -> tuple[str, str, str] | None:
    """(name, digest, source) of an attack run's data split input, or None (runs logged without one)."""
    data = [(d.dataset.name, d.dataset.digest, d.dataset.source) for d in run.inputs.dataset_inputs or []]
    return data[0] if data else None


def _table(metrics: dict, source: dict, clean: dict) -> str:
    on_target = to_markdown(
        with_baseline(metrics, clean),
        "Success rate (%) on the target model"
        + (f" ('{BASELINE_ROW}': the clean images of the same samples)" if clean else ""),
    )
    on_source = to_markdown(
        success_frame(source, ("labels shown",)), "The same examples on the attacked model"
    )
    return f"{on_target}\n\n{on_source}"
