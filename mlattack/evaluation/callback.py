"""AttackCallback: runs the configured attacks on every test batch of a Trainer pass.

The attack run is ``trainer.test(AttackTarget(net), loader_over_selected_samples)`` with ``inference_mode=False``;
per batch the callback runs each attack, measures the result, appends one record per sample to a JSON-lines file
(flushed and fsynced before the next batch — that is what makes a killed run resumable) and updates a
:class:`ShowManyLabels` metric (DDP-reducible state). Samples already on file are skipped, so a resumed run never
counts a sample twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from mlattack.attacks.base import Attack, AttackResult
from mlattack.evaluation.fast import fast_attack_copy
from mlattack.evaluation.metrics import NORMS, ShowManyLabels, perturbation_norms
from mlattack.evaluation.scenarios import predicted_positive, scenario_thresholds

log = logging.getLogger(__name__)

PRECISION_TO_AUTOCAST = {"bf16-mixed": "bf16", "16-mixed": "fp16", "bf16": "bf16", "16": "fp16"}


class AttackTarget(pl.LightningModule):
    """The attacked network as a LightningModule, so the Trainer places it on the device and drives the loop."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        return None  # the work happens in AttackCallback.on_test_batch_end


@dataclass
class AttackJob:
    """One configured attack within a run: where its records go and which samples it covers."""

    name: str
    attack: Attack
    num_samples: int  # the first ``num_samples`` positions of the selection
    avg_labels: float
    run_dir: Path
    panel_positions: tuple[int, ...] = (0, 1, 2, 3)
    rank: int = 0
    done: set[int] = field(default_factory=set)
    metric: ShowManyLabels | None = None
    panel: dict[int, dict] = field(default_factory=dict)

    @property
    def records_path(self) -> Path:
        """This process's record file (one per DDP rank, so no two processes append to one file)."""
        suffix = "" if self.rank == 0 else f".rank{self.rank}"
        return self.run_dir / f"{self.name}{suffix}.jsonl"

    @property
    def panel_path(self) -> Path:
        return self.records_path.with_suffix(".panel.pt")

    def record_files(self) -> list[Path]:
        return [self.run_dir / f"{self.name}.jsonl", *sorted(self.run_dir.glob(f"{self.name}.rank*.jsonl"))]

    def load_records(self) -> list[dict]:
        """All ranks' records, one per position, in position order."""
        records = []
        for path in self.record_files():
            if path.is_file():
                records.extend(_read_jsonl(path))
        # keep the first record per position (a batch re-run after a torn write must not count twice)
        seen: dict[int, dict] = {}
        for r in records:
            seen.setdefault(int(r["position"]), r)
        return [seen[p] for p in sorted(seen)]

    def load_panel(self) -> dict[int, dict]:
        """The panel samples saved by every rank."""
        panel: dict[int, dict] = {}
        for path in [self.run_dir / f"{self.name}.panel.pt", *sorted(self.run_dir.glob(f"{self.name}.rank*.panel.pt"))]:
            if path.is_file():
                panel.update(torch.load(path, weights_only=True))
        return panel


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill -9; its samples are simply attacked again on resume
    return out


class RankSlice(torch.utils.data.Sampler[int]):
    """The positions of whole groups ``g = rank, rank + world, ...`` of ``group`` consecutive positions.

    A group is the attack batch (the study's ``adv_batch_size``): keeping it whole on one rank keeps the batches
    the same under DDP, which matters for the reference variants that couple the samples of a batch on purpose.
    No padding (Lightning's DistributedSampler would repeat samples to even out ranks and count them twice).
    """

    def __init__(self, length: int, group: int = 1) -> None:
        self.length, self.group = int(length), max(1, int(group))

    def _share(self) -> list[int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return group_share(self.length, self.group, torch.distributed.get_rank(), torch.distributed.get_world_size())
        return group_share(self.length, self.group, 0, 1)

    def __iter__(self):
        return iter(self._share())

    def __len__(self) -> int:
        return len(self._share())


def group_share(length: int, group: int, rank: int, world: int) -> list[int]:
    """Positions of groups ``rank, rank + world, ...`` of ``group`` consecutive positions out of ``length``."""
    starts = range(rank * group, length, world * group)
    return [p for s in starts for p in range(s, min(s + group, length))]


def apply_mode(attack: Attack, fast: bool, precision: str) -> Attack:
    """The run-time settings a mode gives an attack, applied before its parameters are logged or hashed.

    Paper mode runs each attack as configured (its own stopping rule included); fast mode adds the per-sample stop
    once every label shows. Mixed precision runs the forward passes under autocast.
    """
    if fast:
        attack.early_stop = True
    attack.autocast = PRECISION_TO_AUTOCAST.get(str(precision))
    return attack


def quantize_images(adv: torch.Tensor, rule: str) -> torch.Tensor:
    """The images as they are judged: "floor" is the study's ``uint8(x * 255) / 255`` (saved as 8-bit files,
    truncated), "round" the nearest 8-bit value, "none" the float images the attack returned."""
    if rule == "none":
        return adv
    scaled = adv.float() * 255.0
    q = torch.floor(scaled) if rule == "floor" else torch.round(scaled)
    return q.clamp(0, 255) / 255.0


QUANTIZE_RULES = ("floor", "round", "none")


def evaluate_adversarial(
    net: nn.Module, adv: torch.Tensor, target: torch.Tensor, loss_fn, grad_finite: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[str]]:
    """fp32 logits of the adversarial images, and per sample why its result is numerically unusable ("" if not).

    A NaN/inf image or logits is plain to see; a NaN input gradient is not (``sign(NaN) == 0`` quietly freezes the
    step). Attacks that tracked their gradients say so in ``grad_finite`` and the images need one forward pass;
    for the others the gradient of the attack loss at the returned image is checked (one forward + backward).
    """
    if grad_finite is None:
        x = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = net(x).float()
            (grad,) = torch.autograd.grad(loss_fn(logits, target).sum(), x)
        grad_finite = torch.isfinite(grad.flatten(1)).all(1)
    else:
        with torch.no_grad():
            logits = net(adv.detach()).float()
    checks = (
        (torch.isfinite(adv.flatten(1)).all(1), "non-finite adversarial image"),
        (torch.isfinite(logits).all(1), "non-finite logits"),
        (grad_finite.to(logits.device), "non-finite input gradient of the attack loss"),
    )
    ok = [c.tolist() for c, _ in checks]
    failure = ["; ".join(reason for j, (_, reason) in enumerate(checks) if not ok[j][k]) for k in range(len(adv))]
    return logits.detach(), failure


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
    )


class AttackCallback(Callback):
    """Run every :class:`AttackJob` on each test batch (see module docstring).

    Arguments:
        jobs: the attacks with their sample counts and record files.
        num_classes: labels of the model (the target is "show all": all ones).
        class_names: for the records' human-readable label lists.
        seed: per-batch seed for randomised attacks, so resumed and uninterrupted runs draw the same starts.
        precision: Lightning precision string; "bf16-mixed"/"16-mixed" run the attacks' forward passes under
            autocast (precision-sensitive attacks keep fp32, see ``Attack.precision_sensitive``).
        fast: the "fast" mode: a sample stops once it shows every label, and the attacks run on a copy of the
            network with BatchNorm folded and channels_last memory (:func:`~mlattack.evaluation.fast.fast_attack_copy`);
            the adversarial images are still judged by the original network.
        compile: ``torch.compile`` that copy (fast mode only; pays off on GPUs and long runs, not on small CPU runs).
        quantize: how adversarial images are stored and judged (:func:`quantize_images`; the study: "floor").

    Every batch is one group of consecutive selection positions: when any of its samples lacks a record, the whole
    group is attacked again (so a reference variant sees the same batch as in an uninterrupted run) and only the
    missing samples are recorded.
    """

    def __init__(
        self,
        jobs: list[AttackJob],
        num_classes: int,
        class_names: list[str],
        seed: int = 123,
        precision: str = "32-true",
        fast: bool = False,
        compile: bool = False,
        quantize: str = "none",
    ) -> None:
        if quantize not in QUANTIZE_RULES:
            raise ValueError(f"quantize must be one of {list(QUANTIZE_RULES)}, got {quantize!r}")
        self.jobs, self.num_classes, self.class_names = jobs, int(num_classes), list(class_names)
        self.seed, self.precision, self.fast, self.compile = int(seed), str(precision), bool(fast), bool(compile)
        self.quantize = quantize
        self.attacked: nn.Module | None = None  # the network the attacks run on (the fast copy in fast mode)
        for job in jobs:
            apply_mode(job.attack, self.fast, self.precision)
            job.metric = ShowManyLabels(self.num_classes, scenario_thresholds(job.avg_labels, self.num_classes))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Resume: feed this rank's share of the stored records into its metric (sums across ranks stay exact)."""
        rank, world = trainer.global_rank, trainer.world_size
        for job in self.jobs:
            job.rank = rank
            records = [r for r in job.load_records() if int(r["position"]) % world == rank]
            job.done = {int(r["position"]) for r in records}
            update_metric(job.metric, records)
            if job.panel_path.is_file():
                job.panel = torch.load(job.panel_path, weights_only=True)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for job in self.jobs:
            job.metric.to(pl_module.device)
        self.attacked = fast_attack_copy(pl_module.net, compile=self.compile) if self.fast else pl_module.net

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.attacked = None

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch: dict, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        net = pl_module.net
        attacked = self.attacked if self.attacked is not None else net
        images, targets = batch["image"], batch["target"]
        positions = batch["position"].tolist()
        for job in self.jobs:
            todo = [i for i, p in enumerate(positions) if p < job.num_samples]
            fresh = [k for k, i in enumerate(todo) if positions[i] not in job.done]
            if not fresh:
                continue
            rows = torch.tensor(todo, device=images.device)
            x = images.index_select(0, rows)
            if self.fast:
                x = x.contiguous(memory_format=torch.channels_last)
            target = torch.ones(len(todo), self.num_classes, device=x.device)
            torch.manual_seed(self.seed * 1_000_003 + positions[todo[0]])
            start = time.perf_counter()
            error = ""
            try:
                with torch.enable_grad():  # the loop evaluates the final images itself (below)
                    res = job.attack.run(attacked, x, target, diagnostics=False)
            except (RuntimeError, ValueError, ArithmeticError) as e:  # e.g. a solver giving up: fail the batch
                log.warning("%s failed on positions %s: %s", job.name, [positions[i] for i in todo], e)
                error = f"attack error: {type(e).__name__}: {e}"[:300]
                n = len(todo)
                res = AttackResult(x.clone(), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.bool),
                                   torch.full((n,), float("nan")))
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds = (time.perf_counter() - start) / len(todo)
            adv = quantize_images(res.adv, self.quantize)
            logits, failure = evaluate_adversarial(net, adv, target, job.attack.loss_fn, res.grad_finite)
            with torch.no_grad():
                res = AttackResult(adv, res.iterations, (predicted_positive(logits) == (target > 0.5)).all(1),
                                   job.attack.loss_fn(logits, target).float())
            if error:
                failure = [error] * len(todo)
            if len(fresh) < len(todo):  # a re-attacked group: record only the samples without a record
                k = torch.tensor(fresh, device=x.device)
                x, logits = x.index_select(0, k), logits.index_select(0, k)
                res = AttackResult(*(t.index_select(0, k.to(t.device)) for t in (res.adv, res.iterations,
                                                                                    res.reached, res.loss)))
                failure, todo = [failure[j] for j in fresh], [todo[j] for j in fresh]
            self._record(job, batch, todo, [positions[i] for i in todo], x, res, logits, targets, seconds, failure)

    def _record(self, job, batch, todo, pos, x, res, logits, targets, seconds, failure) -> None:
        on_mask = predicted_positive(logits)
        shown = on_mask.sum(1)
        norms = perturbation_norms(x, res.adv)
        valid = torch.tensor([not f for f in failure])
        iters = res.iterations.double()
        secs = torch.full((len(todo),), seconds, dtype=torch.float64)
        job.metric.update(shown, norms, iters, secs, res.reached, valid)
        lines = []
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
            lines.append(json.dumps(rec))
            if pos[k] in job.panel_positions:
                job.panel[pos[k]] = {
                    "clean": x[k].detach().cpu(), "adv": res.adv[k].detach().cpu(),
                    "before": rec["true_labels"], "after": rec["labels_shown_names"],
                }
        job.records_path.parent.mkdir(parents=True, exist_ok=True)
        with open(job.records_path, "ab+") as f:
            torn = False
            if f.seek(0, os.SEEK_END) > 0:  # a kill -9 may have cut the last line: start on a fresh one
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            f.write((("\n" if torn else "") + "\n".join(lines) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        for p in pos:
            job.done.add(p)
        if job.panel:
            torch.save(job.panel, job.panel_path)
