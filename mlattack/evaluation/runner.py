"""``mlattack attack``: select samples, run the attacks through a Trainer test pass, log everything to MLflow.

One parent MLflow run per invocation and one nested child run per attack. A run is identified by a *run key*
(:func:`~mlattack.evaluation.settings.run_key`: the digest of the model's weights, the data, the attacks as they
run, N, seed, precision, mode, batch size and quantization); re-running the same command resumes the unfinished
run with that key (``--run_id`` may name it, and must match it), reading back the per-sample records persisted
after every batch. One process writes a run at a time: the run's output folder holds a lock file with the writer's
PID and heartbeat (:class:`~mlattack.rundir.lock.RunLock`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytorch_lightning as pl

from mlattack.data.base import dataset_digest
from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.defences import Preprocessing
from mlattack.evaluation.batches import attack_pass
from mlattack.evaluation.defended import clean_val_map
from mlattack.evaluation.prepared import PreparedRun, launched_worker, prepare_run
from mlattack.evaluation.settings import (
    AttackSettings,
    FastNetwork,
    Mode,
    Precision,
    Quantize,
)
from mlattack.evaluation.specs import AttackSpec, build_specs, load_attack_config
from mlattack.report.tables import success_frame, to_markdown
from mlattack.rundir.atomic import remove_temp_files
from mlattack.rundir.lock import RunLock
from mlattack.scenarios import exp_labels
from mlattack.tracking import attack_runs as runs
from mlattack.tracking.parent_run import AttackRunLog, parent_run_name
from mlattack.tracking.record import ATTACK_EXPERIMENT, CLEAN_MAP_METRIC, attack_config
from mlattack.tracking.store import check_tracking_uri, default_tracking_uri

__all__ = ["AttackReport", "AttackSpec", "load_attack_config", "run_attacks"]

log = logging.getLogger(__name__)

#: the columns of the table the attack command prints and the parent run shows
TABLE_EXTRA = ("labels shown", "L2 (all)")


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
    mode: str = "paper mode"  # AttackSettings.label


def run_attacks(
    model: str,
    data: MultiLabelDataModule,
    attacks: list[AttackSpec],
    num_samples: int | None = None,
    mode: Mode = "paper",
    batch_size: int = 10,
    min_positive: int | None = None,
    quantize: Quantize | None = None,
    precision: Precision = "32-true",
    fast_network: FastNetwork = "exact",
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
    keep_examples: bool = True,
    progress_bar: bool = True,
    callbacks: list[pl.Callback] | None = None,
    defence: Preprocessing | None = None,
    adaptive: bool = False,
    eot_samples: int = 1,
) -> AttackReport:
    """Reproduce the study's protocol for one model and dataset (see module docstring).

    Arguments (besides the obvious ones):
        mode: "paper" runs every attack as configured, its own stopping rule included (the study's code);
            "fast" also stops each sample once it shows every label (and runs the iterative attacks continuously).
        fast_network: what fast mode attacks (ignored in paper mode): "exact" (the network: paper mode's
            arithmetic), "folded" (a BatchNorm-folded channels_last copy: faster steps, a sample that runs its
            whole budget may end a label either way) or "compiled" (that copy under torch.compile: for GPUs and
            large trunks; on a CPU compiling costs more than a small run).
        batch_size: samples attacked together: consecutive groups of the selection (the study's
            ``adv_batch_size`` = 10). The reference variants of ML-CW and MLA-LP couple the samples of a batch as
            the study's code did, so their results depend on it; every other attack is batch-independent.
        num_samples: N, the first N correctly predicted samples. Default: the driver's cap (1000; the study's
            ML-LIW VOC2007 driver: 50).
        min_positive: the least number of positive ground-truth labels a selected sample has. Default: the
            driver's (the study's ML-GCN drivers: 1, its ML-LIW drivers: 2).
        quantize: how adversarial images are judged and measured: "floor" (``uint8(x * 255) / 255``, truncation,
            as the study's ML-GCN VOC2007 driver did in memory before judging), "round", or "none" (the float
            images, as its other three drivers). Default: the driver's in paper mode, "none" in fast mode.
            The driver is the study's ``src/demo_<network>_<dataset>.py`` for the attacked network and dataset,
            or mlattack's stated choice where the study has none (:mod:`mlattack.evaluation.drivers`).
        precision: "32-true" (or "32"), or "16-mixed" / "bf16-mixed": the attacks' forward passes under autocast
            (judging stays fp32). Other Lightning precisions are refused.
        run_id: resume this parent run; it must have been started with the same model weights, data and settings.
        panel_samples: samples drawn in each attack's panel figure in MLflow (0: no figure).
        keep_examples: store every adversarial example of every attack in its MLflow run (``adversarial.npz``:
            uint8 images when they are judged as 8-bit files, float16 otherwise), for ``mlattack evaluate``.
        defence: a preprocessing defence in front of the model (``mlattack.defences``: JPEG, BitDepth,
            MedianSmoothing; e.g. ``configs/defence/jpeg.yaml``): samples are selected, attacked and judged on the
            defended model (whose clean val mAP the run logs as ``clean_val_mAP``, as for every victim).
        adaptive: attack the defence adaptively (BPDA through its step, EOT over a randomised one); judging stays
            on the defended model as deployed.
        eot_samples: draws averaged per forward pass of an adaptive attack on a randomised defence.
    """
    settings = AttackSettings(
        num_samples=num_samples, mode=mode, batch_size=batch_size, min_positive=min_positive,
        quantize=quantize, precision=precision, seed=seed,
        fast_network=fast_network,
        accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
    )  # fmt: skip
    if panel_samples < 0:
        raise ValueError(f"panel_samples must be >= 0, got {panel_samples}")
    built = build_specs(attacks)
    tracking_uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)  # a dead server fails here in seconds, before any work
    client = mlflow.MlflowClient(tracking_uri)
    if int(eot_samples) < 1:
        raise ValueError(f"eot_samples must be >= 1, got {eot_samples}")
    guard = None if defence is None else (defence, bool(adaptive), int(eot_samples))
    run = prepare_run(model, client, tracking_uri, data, built, settings, Path(output_dir), guard)
    run.panel_samples, run.keep_examples = panel_samples, keep_examples
    exp_id = runs.experiment_id(client, experiment, tracking_uri)
    if launched_worker():  # a DDP rank > 0 started by Lightning's launcher: rank 0 owns the lock and MLflow
        return _join_as_worker(client, exp_id, run_id, run)
    with RunLock(run.run_dir / "writer.lock", what=f"attack run {run.key} ({run.run_dir})"):
        # what killed writers left; nobody else writes here while we hold the lock
        remove_temp_files(run.run_dir)
        if run_id:
            parent = runs.checked_run_id(client, run_id, run.key, tracking_uri)
        else:
            parent = runs.find_resumable(client, exp_id, run.key)
        if parent is not None:
            exp_id = client.get_run(parent).info.experiment_id
        return _run_parent(client, exp_id, parent, run, progress_bar, callbacks)


def _join_as_worker(client, exp_id: str, run_id: str | None, run: PreparedRun) -> AttackReport:
    """A DDP rank > 0: attack its share of the run rank 0 created; rank 0 logs (this returns an empty table)."""
    parent = run_id or runs.find_resumable(client, exp_id, run.key)
    if parent is None:
        raise RuntimeError(
            "DDP worker found no attack run to join (rank 0 creates it before launching workers)"
        )
    jobs = run.jobs()
    attack_pass(run.net, jobs, run.selection, run.dataset, run.data, run.settings, progress_bar=False)
    metrics = {job.name: {k: float(v) for k, v in job.metric.compute().items()} for job in jobs}
    return AttackReport(parent, {}, metrics, run.selection.avg_labels, len(run.selection.indices), "", True)


def _run_parent(client, exp_id, parent, run: PreparedRun, progress_bar, callbacks) -> AttackReport:
    """Rank 0 (or the only process): create or resume the parent run, attack, log; close the runs either way."""
    s, sel, data = run.settings, run.selection, run.data
    digest = dataset_digest(run.dataset)
    log = AttackRunLog(
        client, exp_id, run.key, run.model, run.context(), (f"{data.source}/test", digest, data.root)
    )
    name = (
        run.model.reference.split("/")[0]
        if run.model.uri.startswith("models:/")
        else Path(run.model.uri).stem
    )
    try:
        resumed = log.open(parent, parent_run_name(name, data.source, time.strftime("%Y%m%d-%H%M%S")), s.seed)
        # the victim's clean val mAP beside what it resists (behind a defence: what the defence costs)
        client.log_metric(log.parent, CLEAN_MAP_METRIC, clean_val_map(run.net, data, run.device))
        log.log_parent(
            {"num_samples": s.num_samples, "num_selected": len(sel.indices), "attacks": ",".join(run.hp),
             "panel_samples": run.panel_samples, "keep_examples": run.keep_examples},
            {"indices": sel.indices, "ids": sel.ids},
        )  # fmt: skip
        jobs = run.jobs()
        for job, ((_, _, tags), _) in zip(jobs, run.built, strict=True):
            subset = round(sel.head(job.num_samples, run.dataset.targets).avg_labels, 4)
            params = {"num_samples": job.num_samples, "avg_labels_subset": subset}
            log.open_child(job.folder, job.attack.norm, run.hp[job.name], tags, params, s.seed)
        trainer = attack_pass(run.net, jobs, sel, run.dataset, data, s, progress_bar, callbacks)
        del trainer
        metrics = {}
        for job in jobs:
            metrics[job.name] = {k: float(v) for k, v in job.metric.compute().items()}  # reduced across ranks
            log.log_child(
                job.folder, job.attack, metrics[job.name], run.dataset.class_names, attack_config(job.attack)
            )
        table = to_markdown(success_frame(metrics, TABLE_EXTRA, baseline=True))
        expected = ", ".join(f"{e:.2f}" for e in exp_labels(sel.avg_labels, data.num_classes))
        header = f"avgLabels = {sel.avg_labels:.3f}, C = {data.num_classes}, expLabels = {expected}"
        log.finish(metrics, header, sel.avg_labels)
    except BaseException:
        log.fail()
        raise
    return AttackReport(
        log.parent,
        dict(log.children),
        metrics,
        sel.avg_labels,
        len(sel.indices),
        table,
        resumed,
        run.settings.label,
    )
