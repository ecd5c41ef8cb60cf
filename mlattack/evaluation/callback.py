"""AttackCallback: runs the configured attacks on every test batch of a Trainer pass.

The attack run is ``trainer.test(AttackTarget(net), loader_over_selected_samples)`` with ``inference_mode=False``;
per batch the callback runs each attack, measures the result, appends one record per sample to a JSON-lines file
(flushed and fsynced before the next batch — that is what makes a killed run resumable, see
:mod:`mlattack.rundir.records`) and updates a :class:`ShowManyLabels` metric (DDP-reducible state). Samples
already on file are not recorded again, so a resumed run never counts a sample twice.
"""

from __future__ import annotations

import logging
import math
import time
from functools import partial

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from mlattack.attacks.base import AttackResult
from mlattack.defences import Defended
from mlattack.evaluation.chunks import attack_chunk, runs_continuously
from mlattack.evaluation.cost import measure_cost
from mlattack.evaluation.fast import attack_network, uses_channels_last
from mlattack.evaluation.job import AttackJob
from mlattack.evaluation.judging import evaluate_adversarial, quantize_images
from mlattack.evaluation.metrics import COSTS, NORMS, ShowManyLabels, perturbation_norms
from mlattack.evaluation.progress import AttackListener
from mlattack.evaluation.settings import AttackSettings
from mlattack.scenarios import predicted_positive, scenario_thresholds

log = logging.getLogger(__name__)


class AttackTarget(pl.LightningModule):
    """The attacked network as a LightningModule, so the Trainer places it on the device and drives the loop."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        return None  # the work happens in AttackCallback.on_test_batch_end


def _tick(listeners: list, job: AttackJob, samples: int, *_: object) -> None:
    for listener in listeners:
        listener.attack_step(job, samples)


def update_metric(metric: ShowManyLabels, records: list[dict]) -> None:
    """Feed stored per-sample records into the accumulator (used on resume)."""
    if not records:
        return
    metric.update(
        labels_shown=torch.tensor([r["labels_shown"] for r in records]),
        norms={k: torch.tensor([r[k] for r in records], dtype=torch.float64) for k in NORMS},
        iterations=torch.tensor([r["iterations"] for r in records], dtype=torch.float64),
        seconds=torch.tensor([r["seconds"] for r in records], dtype=torch.float64),
        reached=torch.tensor([r["reached"] for r in records]),
        valid=torch.tensor([r["valid"] for r in records]),
        cost={k: torch.tensor([r.get(k, math.nan) for r in records], dtype=torch.float64) for k in COSTS},
        clean_shown=torch.tensor([r["num_true"] for r in records]),
    )


class AttackCallback(Callback):
    """Run every :class:`AttackJob` on each test batch (see module docstring).

    Arguments:
        jobs: the attacks with their sample counts and record files.
        num_classes: labels of the model (the target is "show all": all ones).
        class_names: for the records' human-readable label lists.
        settings: the run's settings, validated and resolved for the driver
            (:meth:`~mlattack.evaluation.settings.AttackSettings.for_driver`); the mode is already applied to the
            jobs' attacks (:func:`~mlattack.evaluation.settings.apply_mode`). The callback reads ``seed`` (per-batch
            seed for randomised attacks, so resumed and uninterrupted runs draw the same starts), ``fast`` (a
            sample stops once it shows every label; the iterative attacks run continuously,
            :mod:`mlattack.evaluation.chunks`), ``fast_network`` (what fast mode attacks, see
            :mod:`mlattack.evaluation.fast`; adversarial images are always judged by the network), ``quantize``
            (how adversarial images are stored and judged, :func:`quantize_images`) and ``batch_size`` (samples
            attacked together, the study's ``adv_batch_size``; in fast mode the samples in flight of the
            continuous scheduler, and a loader batch holds several such groups).

    Every group of consecutive selection positions is attacked whole: when any of its samples lacks a record, the
    group is attacked again (so a reference variant sees the same batch as in an uninterrupted run) and only the
    missing samples are recorded. Attacks run continuously (fast mode) give per-sample results: only the missing
    samples are attacked.
    """

    def __init__(
        self,
        jobs: list[AttackJob],
        num_classes: int,
        class_names: list[str],
        settings: AttackSettings,
    ) -> None:
        if settings.quantize is None:
            raise ValueError(
                "AttackCallback needs settings resolved for a driver (AttackSettings.for_driver)"
            )
        self.jobs, self.num_classes, self.class_names = jobs, int(num_classes), list(class_names)
        self.settings = settings
        self.fast = settings.fast
        self.attacked: nn.Module | None = None  # the network the attacks run on (the fast copy in fast mode)
        # the trainer's callbacks that follow the attacks (progress bars)
        self.listeners: list[AttackListener] = []
        for job in jobs:
            job.metric = ShowManyLabels(
                self.num_classes, scenario_thresholds(job.avg_labels, self.num_classes)
            )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Resume: every stored record marks its sample done; each rank feeds a disjoint share of them (position
        modulo world size) into its metric, so the sums across ranks count every stored sample exactly once."""
        rank, world = trainer.global_rank, trainer.world_size
        self.listeners = [c for c in trainer.callbacks if isinstance(c, AttackListener)]
        for job in self.jobs:
            folder = job.folder
            folder.rank = rank
            records = folder.load_records()
            folder.done = {r["position"] for r in records}
            update_metric(job.metric, [r for r in records if r["position"] % world == rank])
            folder.panel = folder.load_panel()

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for job in self.jobs:
            job.metric.to(pl_module.device)
        # a defended model is attacked through its attack model (adaptive: BPDA/EOT) and judged as deployed
        net = pl_module.net.attack_model() if isinstance(pl_module.net, Defended) else pl_module.net
        self.attacked = attack_network(net, self.settings.fast_network) if self.fast else net

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.attacked = None

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs,
        batch: dict,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        net = pl_module.net
        attacked = self.attacked if self.attacked is not None else net
        images, targets = batch["image"], batch["target"]
        positions = batch["position"].tolist()
        for job in self.jobs:
            todo = [i for i, p in enumerate(positions) if p < job.num_samples]
            fresh = [k for k, i in enumerate(todo) if positions[i] not in job.folder.done]
            # samples on file whose panel picture a crash lost: attacked again for the picture, not recorded
            pictures = [
                k
                for k, i in enumerate(todo)
                if positions[i] in job.folder.done and job.folder.missing_panel(positions[i])
            ]
            if not fresh and not pictures:
                continue
            keep = sorted(fresh + pictures)
            if runs_continuously(job.attack, self.fast):  # per-sample results: attack only what is missing
                todo, keep = [todo[k] for k in keep], list(range(len(keep)))
            rows = torch.tensor(todo, device=images.device)
            x = images.index_select(0, rows)
            if self.fast and uses_channels_last(self.settings.fast_network):
                x = x.contiguous(memory_format=torch.channels_last)
            target = torch.ones(len(todo), self.num_classes, device=x.device)
            for listener in self.listeners:
                listener.attack_starting(job)
            began, start = time.time(), time.perf_counter()
            stepping = [listener for listener in self.listeners if hasattr(listener, "attack_step")]
            hook = attacked.register_forward_hook(  # progress inside a long attack call: one tick per pass
                partial(_tick, stepping, job, len(todo))
            ) if stepping else None  # fmt: skip
            try:
                with measure_cost(attacked, x.device) as cost:  # passes and peak memory of the attack alone
                    res, errors = attack_chunk(
                        job.name, job.attack, attacked, x, target, [positions[i] for i in todo], self.settings.seed,
                        self.settings.batch_size, self.fast,
                    )  # fmt: skip
            finally:
                if hook is not None:
                    hook.remove()
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds = (time.perf_counter() - start) / len(todo)
            spent = {"seconds": seconds, "started": began, **cost.per_sample(len(todo))}
            adv = quantize_images(res.adv, self.settings.quantize)
            logits, failure = evaluate_adversarial(net, adv, target, job.attack.loss_fn, res.grad_finite)
            with torch.no_grad():
                res = AttackResult(
                    adv,
                    res.iterations,
                    (predicted_positive(logits) == (target > 0.5)).all(1),
                    job.attack.loss_fn(logits, target).float(),
                )
            failure = [e or f for e, f in zip(errors, failure, strict=True)]
            if len(keep) < len(todo):  # a re-attacked group: only its samples without a record (or picture)
                k = torch.tensor(keep, device=x.device)
                x, logits = x.index_select(0, k), logits.index_select(0, k)
                res = AttackResult(
                    *(
                        t.index_select(0, k.to(t.device))
                        for t in (res.adv, res.iterations, res.reached, res.loss)
                    )
                )
                failure, todo = [failure[j] for j in keep], [todo[j] for j in keep]
            self._record(
                job, batch, todo, [positions[i] for i in todo], x, res, logits, targets, spent, failure
            )
            for listener in self.listeners:
                listener.attack_done(job)

    def _record(self, job, batch, todo, pos, x, res, logits, targets, spent, failure) -> None:
        """Append the records of the samples not on file yet (and count them); refresh the panel preview.
        ``spent``: the batch's seconds and cost per sample (:mod:`mlattack.evaluation.cost`) and its start time."""
        seconds = spent["seconds"]
        on_mask = predicted_positive(logits)
        shown = on_mask.sum(1)
        norms = perturbation_norms(x, res.adv)
        valid = torch.tensor([not f for f in failure])
        new = torch.tensor([p not in job.folder.done for p in pos])
        if bool(new.any()):
            m = new.to(shown.device)
            job.metric.update(
                shown[m],
                {k: v[m] for k, v in norms.items()},
                res.iterations.double()[m],
                torch.full((int(new.sum()),), seconds, dtype=torch.float64),
                res.reached[m],
                valid[new],
                {c: torch.full((int(new.sum()),), spent[c], dtype=torch.float64) for c in COSTS},
                # a selected sample's clean image shows exactly its true labels (selection.py)
                clean_shown=(targets[todo] > 0.5).sum(1).to(shown.device)[m],
            )
        records, pictures = [], False
        for k, i in enumerate(todo):
            truth = torch.nonzero(targets[i] > 0.5).flatten().tolist()
            on = torch.nonzero(on_mask[k]).flatten().tolist()
            rec = {
                "position": pos[k],
                "index": int(batch["index"][i]),
                "sample_id": batch["sample_id"][i] if "sample_id" in batch else str(int(batch["index"][i])),
                "true_labels": [self.class_names[j] for j in truth],
                "labels_shown_names": [self.class_names[j] for j in on],
                "num_true": len(truth),
                "labels_shown": int(shown[k]),
                "iterations": int(res.iterations[k]),
                "reached": bool(res.reached[k]),
                "loss": float(res.loss[k]),
                "seconds": seconds,
                "valid": bool(valid[k]),
                "failure": failure[k],
            }
            rec.update({n: float(norms[n][k]) for n in NORMS})
            rec.update({c: spent[c] for c in COSTS})
            rec["started"] = spent["started"]  # wall clock (Unix s) of the batch's start: when the attack ran
            if bool(new[k]):
                records.append(rec)
            if pos[k] in job.folder.panel_positions:
                pictures = True
                job.folder.panel[pos[k]] = {
                    "clean": x[k].detach().cpu(),
                    "adv": res.adv[k].detach().cpu(),
                    "before": rec["true_labels"],
                    "after": rec["labels_shown_names"],
                }
        if records:
            job.folder.append(records)
        if pictures:
            job.folder.save_panel()
