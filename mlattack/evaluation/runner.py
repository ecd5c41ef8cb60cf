"""``mlattack attack``: select samples, run the attacks through a Trainer test pass, log everything to MLflow.

One parent MLflow run per invocation and one nested child run per attack. A run is identified by a *run key*
(hash of model, data, attacks, N, seed, precision and mode); re-running the same command resumes the unfinished
run with that key (or ``--run_id`` names one), reading back the per-sample records persisted after every batch.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow
import pytorch_lightning as pl
import torch
import yaml
from mlflow.entities import Metric, Param, RunStatus
from torch import nn
from torch.utils.data import DataLoader

from mlattack.attacks.base import Attack
from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.evaluation.callback import (
    QUANTIZE_RULES,
    AttackCallback,
    AttackJob,
    AttackTarget,
    RankSlice,
    apply_mode,
)
from mlattack.evaluation.scenarios import NUM_SCENARIOS, exp_labels
from mlattack.evaluation.selection import (
    SelectedSamples,
    Selection,
    cached_selection,
    select_correct_samples,
    selection_key,
)
from mlattack.models.registry import load_network
from mlattack.resources import find_config
from mlattack.tracking.panels import attack_panel, plt, success_table_markdown
from mlattack.tracking.store import (
    check_tracking_uri,
    default_artifact_location,
    default_tracking_uri,
    run_tags,
)

log = logging.getLogger(__name__)


ATTACK_EXPERIMENT = "mlattack-attacks"
RUN_KEY_TAG = "mlattack.run_key"
ATTACK_NAME_TAG = "mlattack.attack_name"


@dataclass
class AttackSpec:
    """One entry of ``attacks:`` in a config.

    Give either ``attack`` inline (``class_path``/``init_args``) or ``config``, the path of one of the per-attack
    YAML files (``configs/attack/pgd.yaml``; relative paths are tried against the working directory, then the
    project's ``configs/``), optionally with ``overrides`` of its init_args. ``name`` labels the attack in tables
    and runs (default: the class name); ``num_samples`` overrides N (e.g. 200 for MLA-LP). ``sweep`` maps one
    init argument to a list of values (a budget sweep, e.g. ``{eps: [0.001, 0.003, 0.01]}``): one attack, and
    one child run, per value, named ``<name>[eps=0.003]``.
    """

    attack: Attack | None = None
    config: str | None = None
    overrides: dict | None = None
    name: str | None = None
    num_samples: int | None = None
    sweep: dict[str, list] | None = None

    def build(self) -> list[tuple[str, Attack, dict[str, str]]]:
        """[(name, attack instance, tags)] — one entry, or one per sweep value."""
        if (self.attack is None) == (self.config is None):
            raise ValueError("each attacks entry needs exactly one of `attack` (class_path/init_args) or `config`")
        if not self.sweep:
            attack = self.attack if self.attack is not None else load_attack_config(self.config, self.overrides)
            return [(self.name or type(attack).__name__, attack, {})]
        if len(self.sweep) != 1:
            raise ValueError(f"sweep: give exactly one argument to vary, got {sorted(self.sweep)}")
        (arg, values), = self.sweep.items()
        if not values:
            raise ValueError(f"sweep.{arg}: give at least one value")
        out = []
        for v in values:
            if self.config is not None:
                attack = load_attack_config(self.config, {**(self.overrides or {}), arg: v})
            else:
                if not hasattr(self.attack, arg):
                    raise ValueError(f"sweep: {type(self.attack).__name__} has no argument {arg!r}")
                attack = copy.deepcopy(self.attack)
                setattr(attack, arg, type(getattr(attack, arg))(v))
            base = self.name or type(attack).__name__
            tags = {"mlattack.sweep_base": base, "mlattack.sweep_param": arg, "mlattack.sweep_value": str(v)}
            out.append((f"{base}[{arg}={v}]", attack, tags))
        return out


def load_attack_config(path: str, overrides: dict | None = None) -> Attack:
    """Instantiate an attack from a ``class_path``/``init_args`` YAML file (with optional overrides)."""
    from jsonargparse import ArgumentParser

    try:
        p = find_config(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"attack {e}") from None
    spec = yaml.safe_load(p.read_text())
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"{p}: expected a mapping with `class_path` (and `init_args`) of an attack")
    spec = {"class_path": spec["class_path"], "init_args": {**(spec.get("init_args") or {}), **(overrides or {})}}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--attack", type=Attack)
    try:  # jsonargparse names the offending key and the attack its bad value; add the file
        return parser.instantiate_classes(parser.parse_object({"attack": spec})).attack
    except Exception as e:
        raise ValueError(f"{p}: invalid attack config: {e}") from e


@dataclass
class AttackReport:
    """What ``run_attacks`` returns: the MLflow ids and the per-attack metrics (the printed table's source)."""

    parent_run_id: str
    child_run_ids: dict[str, str]
    metrics: dict[str, dict[str, float]]
    avg_labels: float
    num_selected: int
    table: str
    resumed: bool


def _model_identity(model: str, client: mlflow.MlflowClient) -> str:
    """A stable identity for caching: registry URIs resolve to a concrete version, files to size+mtime."""
    if model.startswith("models:/"):
        ref = model[len("models:/") :]
        try:
            if "@" in ref:
                name, alias = ref.split("@", 1)
                return f"{name}/{client.get_model_version_by_alias(name, alias).version}"
            return ref
        except mlflow.exceptions.MlflowException as e:
            raise ValueError(f"--model {model!r}: no such registered model or alias ({e.message})") from e
    p = Path(model)
    if p.is_file():
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}"
    return model


def _experiment_id(client: mlflow.MlflowClient, name: str, tracking_uri: str) -> str:
    """Get or create the experiment; safe when another process creates it at the same moment."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))
    except mlflow.exceptions.MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _child_runs(client: mlflow.MlflowClient, experiment_id: str, parent: str) -> dict[str, str]:
    """{attack name: run id} of the nested runs under ``parent``."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.data.tags.get(ATTACK_NAME_TAG): r.info.run_id for r in runs}


def _find_resumable(client: mlflow.MlflowClient, experiment_id: str, run_key: str) -> str | None:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and tags.`mlflow.parentRunId` IS NULL",
        order_by=["attributes.start_time DESC"], max_results=5,
    )
    for r in runs:
        if r.info.status != RunStatus.to_string(RunStatus.FINISHED):
            return r.info.run_id
    return None


def _log_params(client: mlflow.MlflowClient, run_id: str, params: dict[str, object]) -> None:
    existing = client.get_run(run_id).data.params
    new = [Param(k, str(v)[:500]) for k, v in params.items() if k not in existing]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i : i + 100])


def _check_classes(net: nn.Module, dm: MultiLabelDataModule, image_size: int) -> None:
    n = getattr(net, "num_classes", None)
    if n is None:
        with torch.no_grad():
            n = net(torch.zeros(1, 3, image_size, image_size)).shape[-1]
    if int(n) != dm.num_classes:
        raise ValueError(
            f"the model predicts {n} labels but data source {dm.source!r} has {dm.num_classes} classes; "
            "attack a model trained on this dataset"
        )


def run_attacks(
    model: str,
    data: MultiLabelDataModule,
    attacks: list[AttackSpec],
    num_samples: int = 1000,
    mode: Literal["paper", "fast"] = "paper",
    batch_size: int = 10,
    min_positive: int = 1,
    quantize: Literal["floor", "round", "none"] | None = None,
    precision: str = "32-true",
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    seed: int = 123,
    tracking_uri: str | None = None,
    experiment: str = ATTACK_EXPERIMENT,
    run_id: str | None = None,
    output_dir: str = "outputs/attacks",
    panel_samples: int = 4,
    progress_bar: bool = True,
    callbacks: list[pl.Callback] | None = None,
) -> AttackReport:
    """Reproduce the study's protocol for one model and dataset (see module docstring).

    Arguments (besides the obvious ones):
        mode: "paper" runs every attack as configured, its own stopping rule included (the study's code);
            "fast" also stops each sample once it shows every label and attacks a BatchNorm-folded copy.
        batch_size: samples attacked together: consecutive groups of the selection (the study's
            ``adv_batch_size`` = 10). The reference variants of ML-CW and MLA-LP couple the samples of a batch as
            the study's code did, so their results depend on it; every other attack is batch-independent.
        min_positive: the least number of positive ground-truth labels a selected sample has (the study's
            ML-GCN driver: 1, its ML-LIW driver: 2).
        quantize: how adversarial images are judged and measured: "floor" = saved as 8-bit and re-read, as the
            study's evaluation did (``uint8(x * 255)`` truncates), "round", or "none" (the float images).
            Default: "floor" in paper mode, "none" in fast mode.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if min_positive < 1:
        raise ValueError(f"min_positive must be >= 1, got {min_positive}")
    quantize = quantize or ("floor" if mode == "paper" else "none")
    if quantize not in QUANTIZE_RULES:
        raise ValueError(f"quantize must be one of {list(QUANTIZE_RULES)}, got {quantize!r}")
    if not attacks:
        raise ValueError("attacks: give at least one attack")
    built = [(entry, spec) for spec in attacks for entry in spec.build()]
    names = [name for (name, _, _), _ in built]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks: names must be unique, got {names} (set `name:` to tell them apart)")
    for spec in attacks:
        if spec.num_samples is not None and spec.num_samples <= 0:
            raise ValueError(f"attacks[{spec.name}].num_samples must be > 0, got {spec.num_samples}")
    tracking_uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)  # a dead server fails here in seconds, before any work
    client = mlflow.MlflowClient(tracking_uri)
    identity = _model_identity(model, client)
    net = load_network(model, tracking_uri)
    split = "test"
    dataset = data.dataset(split)
    _check_classes(net, data, data.image_size)
    if int(dataset.targets.sum()) == 0:
        raise ValueError(f"data source {data.source!r} split {split!r} has no positive labels to select samples by")

    worker = _launched_worker()
    device = pl.Trainer(accelerator=accelerator, devices=devices, logger=False, enable_progress_bar=False,
                        num_nodes=num_nodes).strategy.root_device
    key_parts = (identity, data.source, data.root, split, data.image_size, data.options, num_samples)
    key_parts += (() if min_positive == 1 else (min_positive,))  # keeps the keys of existing selections
    sel_key = selection_key(*key_parts)
    cache_dir = Path(output_dir) / "selections"
    selection: Selection = cached_selection(
        cache_dir, sel_key,
        lambda: select_correct_samples(net.to(device), dataset, num_samples, data.eval_batch_size, device,
                                       min_positive=min_positive),
    )
    if len(selection.indices) == 0:
        raise ValueError(f"no sample of {data.source!r}/{split} is predicted correctly: nothing to attack")
    if len(selection.indices) < num_samples:
        print(f"Only {len(selection.indices)} correctly predicted samples exist (asked for {num_samples}); "
              "attacking those.")

    for (_, a, _), _ in built:  # the settings that run are the settings that are logged and hashed
        apply_mode(a, mode == "fast", precision)
    hp = {n: a.hyperparameters() for (n, a, _), _ in built}
    run_key = hashlib.sha1(
        json.dumps([sel_key, hp, [s.num_samples for _, s in built], seed, precision, mode, batch_size, quantize],
                   sort_keys=True,
                   default=str).encode()
    ).hexdigest()[:16]
    exp_id = _experiment_id(client, experiment, tracking_uri)
    parent = run_id or _find_resumable(client, exp_id, run_key)
    resumed = parent is not None
    if worker:  # a DDP rank > 0 started by Lightning's launcher: rank 0 owns the MLflow side
        if parent is None:
            raise RuntimeError("DDP worker found no attack run to join (rank 0 creates it before launching workers)")
        return _run_worker(net, parent, client, exp_id, built, selection, dataset, data, run_key, output_dir, seed,
                           precision, mode, accelerator, devices, strategy, num_nodes, num_samples, batch_size,
                           quantize)
    if parent is None:
        model_name = identity.split("/")[0] if model.startswith("models:/") else Path(model).stem
        run = client.create_run(
            exp_id, run_name=f"attack-{model_name}-{data.source}-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={RUN_KEY_TAG: run_key, **run_tags(seed)},
        )
        parent = run.info.run_id
    else:
        client.update_run(parent, status="RUNNING")
        print(f"Resuming attack run {parent}")
    run_dir = Path(output_dir) / run_key
    child_ids: dict[str, str] = {}
    try:
        _log_params(client, parent, {
            "model_uri": model, "model_identity": identity, "network": type(net).__name__.lower(),
            "dataset": data.source, "split": split,
            "num_samples": num_samples, "num_selected": len(selection.indices), "min_positive": min_positive,
            "avg_labels": round(selection.avg_labels, 4), "num_classes": data.num_classes, "seed": seed,
            "precision": precision, "device": str(device), "mode": mode, "batch_size": batch_size, "quantize": quantize,
            "image_size": data.image_size, "attacks": ",".join(names),
        })
        client.log_dict(parent, {"indices": selection.indices, "ids": selection.ids}, "selection.json")
        existing = _child_runs(client, exp_id, parent)
        jobs = []
        for (name, attack, extra_tags), spec in built:
            n = min(spec.num_samples or num_samples, len(selection.indices))
            sub = selection.head(n, dataset.targets)
            cid = existing.get(name)
            if cid is None:
                cid = client.create_run(exp_id, run_name=name, tags={
                    "mlflow.parentRunId": parent, ATTACK_NAME_TAG: name, RUN_KEY_TAG: run_key,
                    **extra_tags}).info.run_id
            else:
                client.update_run(cid, status="RUNNING")
            child_ids[name] = cid
            _log_params(client, cid, {**{f"attack.{k}": v for k, v in hp[name].items()}, "num_samples": n,
                                      "avg_labels": round(selection.avg_labels, 4),
                                      "avg_labels_subset": round(sub.avg_labels, 4), "mode": mode,
                                      "batch_size": batch_size, "quantize": quantize, "precision": precision,
                                      "dataset": data.source, "model_uri": model,
                                      "network": type(net).__name__.lower()})
            jobs.append(AttackJob(name, attack, n, selection.avg_labels, run_dir,
                                  panel_positions=tuple(range(min(panel_samples, n)))))
        trainer = _attack_pass(net, jobs, selection, dataset, data, seed, precision, mode, accelerator, devices,
                               strategy, num_nodes, batch_size, quantize, progress_bar, callbacks)
        metrics = {}
        for job in jobs:
            values = {k: float(v) for k, v in job.metric.compute().items()}  # reduced across DDP ranks
            metrics[job.name] = values
            _log_attack(client, child_ids[job.name], job, values, data.num_classes)
        del trainer
        table = success_table_markdown(metrics)
        header = (f"avgLabels = {selection.avg_labels:.3f}, C = {data.num_classes}, expLabels = "
                  + ", ".join(f"{e:.2f}" for e in exp_labels(selection.avg_labels, data.num_classes)))
        client.log_text(parent, header + "\n\n" + table + "\n", "success_table.md")
        client.log_metric(parent, "avg_labels", selection.avg_labels)
        client.set_terminated(parent, "FINISHED")
    except BaseException:
        status = "KILLED" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "FAILED"
        for cid in child_ids.values():
            if client.get_run(cid).info.status == "RUNNING":
                client.set_terminated(cid, status)
        client.set_terminated(parent, status)
        raise
    return AttackReport(parent, child_ids, metrics, selection.avg_labels, len(selection.indices), table, resumed)


def _launched_worker() -> bool:
    """True in a process that Lightning's DDP launcher started for a rank other than 0."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def _attack_pass(net, jobs, selection, dataset, data, seed, precision, mode, accelerator, devices, strategy,
                 num_nodes, batch_size, quantize, progress_bar=True, callbacks=None) -> pl.Trainer:
    """The Trainer test pass that drives AttackCallback over the selected samples (each DDP rank: its share of
    whole batches, so a batch is the same group of positions whatever the number of ranks)."""
    callback = AttackCallback(jobs, data.num_classes, dataset.class_names, seed, precision, fast=mode == "fast",
                              quantize=quantize)
    samples = SelectedSamples(dataset, selection)
    loader = DataLoader(samples, batch_size=batch_size, sampler=RankSlice(len(samples), batch_size),
                        num_workers=data.num_workers)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes, logger=False,
        callbacks=[callback, *(callbacks or [])], inference_mode=False, use_distributed_sampler=False,
        enable_progress_bar=progress_bar, enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.test(AttackTarget(net), dataloaders=loader, verbose=False)
    return trainer


def _run_worker(net, parent, client, exp_id, built, selection, dataset, data, run_key, output_dir, seed, precision,
                mode, accelerator, devices, strategy, num_nodes, num_samples, batch_size, quantize) -> AttackReport:
    """A DDP rank > 0: attack this rank's share and join the metric reduction; log nothing."""
    existing = _child_runs(client, exp_id, parent)
    jobs = []
    for (name, attack, _), spec in built:
        n = min(spec.num_samples or num_samples, len(selection.indices))
        jobs.append(AttackJob(name, attack, n, selection.avg_labels, Path(output_dir) / run_key))
    _attack_pass(net, jobs, selection, dataset, data, seed, precision, mode, accelerator, devices,
                 strategy, num_nodes, batch_size, quantize, progress_bar=False)
    metrics = {job.name: {k: float(v) for k, v in job.metric.compute().items()} for job in jobs}
    return AttackReport(parent, existing, metrics, selection.avg_labels, len(selection.indices), "", True)


def _log_attack(client, run_id: str, job: AttackJob, values: dict[str, float], num_classes: int) -> None:
    """Metrics (success_rate with step = n draws the curve in the UI), the per-sample table and the panel."""
    ts = int(time.time() * 1000)
    ms = [Metric("success_rate", values[f"success_rate_n{k}"], ts, k) for k in range(NUM_SCENARIOS)]
    ms += [Metric(k, v, ts, 0) for k, v in values.items()]
    client.log_batch(run_id, metrics=ms)
    records = job.load_records()
    if records:
        buf = io.StringIO()
        cols = [c for c in records[0] if c not in ("true_labels", "labels_shown_names")]
        w = csv.writer(buf)
        w.writerow([*cols, "true_labels", "labels_shown_names"])
        for r in records:
            w.writerow([r[c] for c in cols] + [";".join(r["true_labels"]), ";".join(r["labels_shown_names"])])
        client.log_text(run_id, buf.getvalue(), "samples.csv")
    panel = job.load_panel()
    if panel:
        fig = attack_panel([panel[p] for p in sorted(panel)], title=f"{job.name}: show all labels")
        client.log_figure(run_id, fig, "panel.png")
        plt.close(fig)
    client.set_terminated(run_id, "FINISHED")
