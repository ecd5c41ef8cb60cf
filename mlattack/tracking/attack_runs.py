"""The MLflow side of ``mlattack attack``: finding the run to resume, claiming it, and logging its record.

A parent run carries the *run key* (tag ``mlattack.run_key``: a hash of the model's weights digest, the data, the
selection and every setting that changes a number); ``--run_id`` must name a parent run with the same key.
Logging is idempotent, so a run resumed after a crash in the middle of logging ends with every metric once.
The names of everything written live in :mod:`mlattack.tracking.record`.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from pathlib import Path

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunStatus

from mlattack.errors import with_hint
from mlattack.rundir import examples
from mlattack.rundir.lock import RunBusy, describe, process_alive, this_process
from mlattack.rundir.records import RunFolder
from mlattack.scenarios import NUM_SCENARIOS
from mlattack.tracking.panels import attack_panel, panel_title, plt
from mlattack.tracking.record import (
    ATTACK_NAME_TAG,
    ATTACK_YAML,
    COMPARE_VIEW,
    CURVE,
    EXAMPLES_NPZ,
    EXPERIMENT_DESCRIPTIONS,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    HEADLINE,
    NOTE_TAG,
    PANEL_PNG,
    PARENT_TAG,
    RUN_KEY_TAG,
    SAMPLES_CSV,
    WRITER_TAG,
    compare_view_link,
    compare_view_state,
    logged_metrics,
    success_key,
)
from mlattack.tracking.store import NO_MODEL_HINT, default_artifact_location

#: the metrics linked to the judged model (shown on its logged-model page, one row per run)
MODEL_METRICS = {HEADLINE, "labels_shown", *(success_key(n) for n in range(NUM_SCENARIOS))}


def model_reference(model: str, client: mlflow.MlflowClient) -> str:
    """A readable name for the attacked model: registry URIs resolve to ``name/version`` (a clear error when there
    is no such model), files to their path. Not an identity: the weights digest is."""
    if not model.startswith("models:/"):
        return model
    ref = model[len("models:/") :]
    try:
        name, sep, version = ref.partition("@") if "@" in ref else ref.partition("/")
        if version.lower() == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            return f"{name}/{max(int(v.version) for v in versions)}"
        if sep == "@":
            return f"{name}/{client.get_model_version_by_alias(name, version).version}"
        client.get_model_version(name, version)
        return ref
    except (mlflow.exceptions.MlflowException, ValueError) as e:
        msg = getattr(e, "message", str(e))
        error = ValueError(
            f"--model {model!r}: no such registered model or alias in the tracking store {client.tracking_uri} "
            f"({msg})"
        )
        raise with_hint(error, NO_MODEL_HINT) from e


def experiment_id(client: mlflow.MlflowClient, name: str, tracking_uri: str) -> str:
    """Get or create the experiment (with its description); safe when another process creates it at once."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))
        except mlflow.exceptions.MlflowException:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    have = exp.tags if exp is not None else {}
    view_tag = f"mlflow.sharedViewState.{COMPARE_VIEW}"
    wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, view_tag: compare_view_state(name)}
    if name in EXPERIMENT_DESCRIPTIONS:
        # the link first: the runs page shows the description's first line only until it is expanded
        wanted[NOTE_TAG] = f"{compare_view_link(exp_id)}. {EXPERIMENT_DESCRIPTIONS[name]}"
    for key, value in wanted.items():  # set once: a description or view the user edited is kept
        if key not in have:
            client.set_experiment_tag(exp_id, key, value)
    return exp_id


def child_runs(client: mlflow.MlflowClient, experiment_id: str, parent: str) -> dict[str, str]:
    """{attack name: run id} of the nested runs under ``parent``."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
    return {r.data.tags.get(ATTACK_NAME_TAG): r.info.run_id for r in runs}


def find_resumable(client: mlflow.MlflowClient, experiment_id: str, run_key: str) -> str | None:
    """The newest unfinished parent run with this key."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and tags.`{PARENT_TAG}` IS NULL",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    for r in runs:
        if r.info.status != RunStatus.to_string(RunStatus.FINISHED):
            return r.info.run_id
    return None


def checked_run_id(client: mlflow.MlflowClient, run_id: str, run_key: str, tracking_uri: str) -> str:
    """``--run_id``: it must be an attack parent run of this store whose key equals this command's run key."""
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        raise ValueError(f"--run_id {run_id}: no such run in tracking store {tracking_uri}") from e
    if PARENT_TAG in run.data.tags:
        raise ValueError(
            f"--run_id {run_id} is the attack run {run.data.tags.get(ATTACK_NAME_TAG)!r} under "
            f"{run.data.tags[PARENT_TAG]}; give the parent run's id"
        )
    theirs = run.data.tags.get(RUN_KEY_TAG)
    if theirs != run_key:
        raise ValueError(
            f"--run_id {run_id} holds an attack run with run key {theirs}, but this command's model, data and "
            f"settings give run key {run_key}: resuming it would mix results of different settings. Repeat that "
            "run's settings (its params in MLflow) to resume it, or drop --run_id to start or resume the run of "
            "these settings."
        )
    return run_id


def claim(client: mlflow.MlflowClient, run_id: str) -> None:
    """Record this process as the run's writer; refuse if the recorded writer is another live process here.

    Complements the output folder's lock file (:class:`~mlattack.rundir.lock.RunLock`) for two commands with
    different output folders on one store.
    """
    run = client.get_run(run_id)
    try:
        holder = json.loads(run.data.tags.get(WRITER_TAG, "null"))
    except ValueError:
        holder = None
    me = this_process()
    if (
        isinstance(holder, dict)
        and run.info.status == "RUNNING"
        and (holder.get("pid"), holder.get("host")) != (me["pid"], me["host"])
        and process_alive(holder)
    ):
        raise RunBusy(
            f"attack run {run_id} is being written by {describe(holder)}; wait for it to finish, or "
            "stop it and re-run the same command to resume it"
        )
    client.set_tag(run_id, WRITER_TAG, json.dumps(me))


def open_child(
    client: mlflow.MlflowClient,
    experiment_id: str,
    parent: str,
    name: str,
    run_key: str,
    tags: dict,
    params: dict,
    records: list[dict] | None = None,
) -> str:
    """The nested run of attack ``name`` under ``parent``: reopened when it exists (a resumed run), else created,
    starting when the attack first ran (:func:`attack_start`)."""
    cid = child_runs(client, experiment_id, parent).get(name)
    if cid is None:
        tags = {PARENT_TAG: parent, ATTACK_NAME_TAG: name, RUN_KEY_TAG: run_key, **tags}
        start = attack_start(records or [])
        cid = client.create_run(experiment_id, start_time=start, run_name=name, tags=tags).info.run_id
    elif client.get_run(cid).info.status != "FINISHED":
        client.update_run(cid, status="RUNNING")
    log_params(client, cid, params)
    return cid


def attack_start(records: list[dict]) -> int:
    """When an attack's run starts (ms): its first batch's wall clock when records are on file already (a run made
    from the records of a finished one), else now (the attack is about to start; every attack of an invocation
    runs in its first batch)."""
    started = [r["started"] for r in records if "started" in r]
    return int(1000 * min(started)) if started else int(time.time() * 1000)


def attack_end(start_ms: int, records: list[dict]) -> int:
    """When an attack's run ends (ms): its start plus the attack's own time, the sum of its samples' seconds over
    every session, so the UI's Duration is the attack's time and not its invocation's (the attacks of one
    invocation take turns batch by batch, so their wall-clock spans would all equal the parent's). Never later
    than now."""
    own = sum(float(r["seconds"]) for r in records)
    return min(start_ms + int(round(1000 * own)), int(time.time() * 1000))


def close_all(client: mlflow.MlflowClient, parent: str, children: dict[str, str], status: str) -> None:
    """End a failed or interrupted run: its still-running children and the parent get ``status``."""
    for cid in children.values():
        if client.get_run(cid).info.status == "RUNNING":
            client.set_terminated(cid, status)
    client.set_terminated(parent, status)


def log_params(client: mlflow.MlflowClient, run_id: str, params: dict[str, object]) -> None:
    """Params not yet on the run (MLflow refuses to change a param; a resumed run has them already)."""
    existing = client.get_run(run_id).data.params
    new = [Param(k, str(v)[:500]) for k, v in params.items() if k not in existing]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i : i + 100])


def log_metrics_once(client: mlflow.MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    """Log ``metrics`` unless the run has every one of them already (a crash after logging, before finishing)."""
    have = client.get_run(run_id).data.metrics
    if any(m.key not in have for m in metrics):
        for i in range(0, len(metrics), 500):
            client.log_batch(run_id, metrics=metrics[i : i + 500])


def log_results(
    client: mlflow.MlflowClient,
    run_id: str,
    values: dict[str, float],
    model_id: str | None = None,
    dataset: tuple[str, str] | None = None,
) -> None:
    """An attack's (or a transfer's) numbers: every metric under its MLflow name, and the success curve over the
    scenarios (``curve/success_vs_n``, step = n). The headline numbers are linked to the judged model's logged
    model (``model_id``) and the data (``dataset``: name, digest), so the model's page lists them with this run."""
    ts = int(time.time() * 1000)
    ms = [Metric(CURVE, values[f"success_rate_n{k}"], ts, k) for k in range(NUM_SCENARIOS)]
    name, digest = dataset if dataset and all(dataset) else (None, None)  # MLflow wants both or neither
    for key, value in logged_metrics(values).items():
        linked = model_id is not None and key in MODEL_METRICS
        ms.append(Metric(key, value, ts, 0, model_id if linked else None, name if linked else None,
                         digest[:36] if linked and digest else None))  # fmt: skip
    log_metrics_once(client, run_id, ms)


def samples_csv(records: list[dict]) -> str:
    """The per-sample table: one row per attacked sample, label lists joined with ';'."""
    buf = io.StringIO()
    # every record's fields (a run resumed across versions mixes records with and without the cost fields)
    cols = [
        c
        for c in dict.fromkeys(k for r in records for k in r)
        if c not in ("true_labels", "labels_shown_names")
    ]
    w = csv.writer(buf)
    w.writerow([*cols, "true_labels", "labels_shown_names"])
    for r in records:
        w.writerow(
            [r.get(c, "") for c in cols] + [";".join(r["true_labels"]), ";".join(r["labels_shown_names"])]
        )
    return buf.getvalue()


def log_attack(
    client: mlflow.MlflowClient,
    run_id: str,
    folder: RunFolder,
    attack: object,
    values: dict[str, float],
    class_names: list[str],
    config: dict | None = None,
    model_id: str | None = None,
    dataset: tuple[str, str] | None = None,
) -> None:
    """Everything one attack's run holds: metrics, the per-sample table, every adversarial example, the panel and
    the attack's settings as a loadable config; then the run is finished at :func:`attack_end`."""
    log_results(client, run_id, values, model_id, dataset)
    have = {a.path for a in client.list_artifacts(run_id)}
    if config is not None and ATTACK_YAML not in have:
        client.log_text(run_id, yaml.safe_dump(config, sort_keys=False), ATTACK_YAML)
    records = folder.load_records()
    if records:
        client.log_text(run_id, samples_csv(records), SAMPLES_CSV)
    if folder.keep_examples and records and EXAMPLES_NPZ not in have:
        with tempfile.TemporaryDirectory() as tmp:
            path = examples.merge(
                folder.example_files(), records, class_names, Path(tmp) / EXAMPLES_NPZ, folder.image_size
            )
            if path is not None:
                client.log_artifact(run_id, str(path))
    panel = folder.load_panel()
    if panel:
        fig = attack_panel(
            [panel[p] for p in sorted(panel)], title=panel_title(folder.name, attack, len(panel))
        )
        client.log_figure(run_id, fig, PANEL_PNG)
        plt.close(fig)
    end = attack_end(client.get_run(run_id).info.start_time, records)
    client.set_terminated(run_id, "FINISHED", end_time=end)
