"""``mlattack attack``: select samples, run the attacks through a Trainer test pass, log everything to MLflow.

One parent MLflow run per invocation and one nested child run per attack. A run is identified by a *run key*
(:func:`~mlattack.evaluation.settings.run_key`: the digest of the model's weights, the data, the attacks as they
run, N, seed, precision, mode, batch size and quantization); re-running the same command resumes the unfinished
run with that key (``--run_id`` may name it, and must match it), reading back the per-sample records persisted
after every batch. One process writes a run at a time: the run's output folder holds a lock file with the writer's
PID and heartbeat (:class:`~mlattack.tracking.lock.RunLock`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch import nn

from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.defences import Defended, Preprocessing
from mlattack.errors import device_error
from mlattack.evaluation.batches import attack_pass
from mlattack.evaluation.defended import CLEAN_MAP_METRIC, clean_val_map
from mlattack.evaluation.records import AttackJob
from mlattack.evaluation.scenarios import exp_labels
from mlattack.evaluation.selection import (
    Selection,
    cached_selection,
    check_classes,
    dataset_digest,
    select_correct_samples,
    selection_key,
)
from mlattack.evaluation.settings import (
    AttackSettings,
    FastNetwork,
    Mode,
    Precision,
    Quantize,
    apply_mode,
    run_key,
)
from mlattack.evaluation.specs import AttackSpec, build_specs, load_attack_config
from mlattack.report.tables import success_frame, to_markdown
from mlattack.tracking import attack_runs as runs
from mlattack.tracking.atomic import remove_temp_files
from mlattack.tracking.lineage import ModelLineage, model_lineage
from mlattack.tracking.lock import RunLock
from mlattack.tracking.parent_run import AttackRunLog, parent_run_name
from mlattack.tracking.record import ATTACK_EXPERIMENT, attack_config
from mlattack.tracking.registry import load_network, weights_digest
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
    run = _prepare(model, client, tracking_uri, data, built, settings, Path(output_dir), guard)
    run.panel_samples, run.keep_examples = panel_samples, keep_examples
    exp_id = runs.experiment_id(client, experiment, tracking_uri)
    # a DDP rank > 0 started by Lightning's launcher: rank 0 owns the lock and the MLflow side
    if _launched_worker():
        parent = run_id or runs.find_resumable(client, exp_id, run.key)
        if parent is None:
            raise RuntimeError(
                "DDP worker found no attack run to join (rank 0 creates it before launching workers)"
            )
        jobs = run.jobs()
        attack_pass(run.net, jobs, run.selection, run.dataset, data, run.settings, progress_bar=False)
        metrics = {job.name: {k: float(v) for k, v in job.metric.compute().items()} for job in jobs}
        return AttackReport(
            parent, {}, metrics, run.selection.avg_labels, len(run.selection.indices), "", True
        )
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


@dataclass
class _Run:
    """Everything one attack run needs, prepared identically by every DDP rank before any MLflow run exists."""

    model: ModelLineage  # the URI, name/version or path (for humans), registry lineage
    digest: str  # the weights digest: the model's identity
    net: nn.Module
    data: MultiLabelDataModule
    dataset: object
    selection: Selection
    settings: AttackSettings
    built: list
    hp: dict[str, dict]
    key: str
    run_dir: Path
    device: torch.device
    panel_samples: int = 4
    keep_examples: bool = True
    defence: dict | None = None  # the defence's settings (None: the bare network)

    def jobs(self) -> list[AttackJob]:
        out = []
        for (name, attack, _), spec in self.built:
            n = min(spec.num_samples or self.settings.num_samples, len(self.selection.indices))
            figure = tuple(range(min(self.panel_samples, n)))
            out.append(AttackJob(name, attack, n, self.selection.avg_labels, self.run_dir, figure,
                                 self.keep_examples, exact_8bit=self.settings.quantize != "none",
                                 image_size=self.data.image_size))  # fmt: skip
        return out

    def context(self) -> dict[str, object]:
        """The params every run of this attack run carries (parent and children), so runs compare across parents."""
        s, data = self.settings, self.data
        return {
            "dataset": data.source, "split": "test", "image_size": data.image_size, "num_classes": data.num_classes,
            "network": type(self.net.net if isinstance(self.net, Defended) else self.net).__name__.lower(), **self.model.params(), "model_digest": self.digest,
            "mode": s.mode, "batch_size": s.batch_size, "quantize": s.quantize, "precision": s.precision,
            **({"fast_network": s.fast_network} if s.fast else {}), "seed": s.seed, "min_positive": s.min_positive,
            "driver": s.driver, "device": str(self.device),
            "avg_labels": round(self.selection.avg_labels, 4),
            **({f"defence/{k}" if k != "defence" else k: v for k, v in self.defence.items()} if self.defence else {}),
        }  # fmt: skip


def _prepare(model, client, tracking_uri, data, built, settings: AttackSettings, output_dir: Path,
             guard: tuple[Preprocessing, bool, int] | None = None) -> _Run:  # fmt: skip
    """Load and check the model, select the samples (cached by content), fix the attacks' settings, key the run."""
    lineage = model_lineage(client, model, runs.model_reference(model, client))
    net = load_network(model, tracking_uri)
    s = settings.for_driver(type(net).__name__, data.source)  # unset fields: the study's driver's
    if guard is not None:  # the defended model is the victim: selection, attacks and judging all see it
        net = Defended(net, *guard).eval()
    dataset = data.dataset("test")
    check_classes(net, data.num_classes, data.source, data.image_size)
    if int(dataset.targets.sum()) == 0:
        raise ValueError(
            f"data source {data.source!r} split 'test' has no positive labels to select samples by"
        )
    try:
        trainer = pl.Trainer(accelerator=s.accelerator, devices=s.devices, num_nodes=s.num_nodes, logger=False,
                             enable_progress_bar=False)  # fmt: skip
    except MisconfigurationException as e:
        if "backend" not in str(e):
            raise
        raise device_error("--accelerator", s.accelerator, e) from e
    device = trainer.strategy.root_device
    digest = weights_digest(net)
    defended = None if guard is None else net.settings()
    # the selection depends on the defence's step, the run also on how it is attacked
    step = None if guard is None else guard[0].settings()
    sel_key = selection_key(digest if step is None else f"{digest}+{sorted(step.items())}", data.source, data.root, "test", data.image_size, data.options, s.num_samples,
                            s.min_positive, dataset_digest(dataset))  # fmt: skip
    selection = cached_selection(
        output_dir / "selections", sel_key,
        lambda: select_correct_samples(net.to(device), dataset, s.num_samples, data.eval_batch_size, device,
                                       min_positive=s.min_positive),
        dataset=dataset, requested=s.num_samples,
    )  # fmt: skip
    if len(selection.indices) == 0:
        raise ValueError(f"no sample of {data.source!r}/test is predicted correctly: nothing to attack")
    if len(selection.indices) < s.num_samples and not _launched_worker():
        print(f"Only {len(selection.indices)} correctly predicted samples exist (asked for {s.num_samples}); "
              "attacking those.")  # fmt: skip
    for (_, a, _), _ in built:  # the settings that run are the settings that are logged and hashed
        apply_mode(a, s.fast, s.precision)
    hp = {n: a.hyperparameters() for (n, a, _), _ in built}
    key = run_key(sel_key if defended is None else f"{sel_key}+{sorted(defended.items())}", hp,
                  [spec.num_samples for _, spec in built], s)  # fmt: skip
    return _Run(lineage, digest, net, data, dataset, selection, s, built, hp, key, output_dir / key, device,
                defence=defended)  # fmt: skip


def _run_parent(client, exp_id, parent, run: _Run, progress_bar, callbacks) -> AttackReport:
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
            log.open_child(job, run.hp[job.name], tags, {"num_samples": job.num_samples, "avg_labels_subset": subset},
                           s.seed)  # fmt: skip
        trainer = attack_pass(run.net, jobs, sel, run.dataset, data, s, progress_bar, callbacks)
        del trainer
        metrics = {}
        for job in jobs:
            metrics[job.name] = {k: float(v) for k, v in job.metric.compute().items()}  # reduced across ranks
            log.log_child(job, metrics[job.name], run.dataset.class_names, attack_config(job.attack))
        table = to_markdown(success_frame(metrics, TABLE_EXTRA))
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


def _launched_worker() -> bool:
    """True in a process that Lightning's DDP launcher started for a rank other than 0."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0
