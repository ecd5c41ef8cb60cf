"""What every DDP rank of one ``mlattack attack`` prepares identically before any MLflow run exists: the network (and
its defence), the selected samples (cached by content), the attacks with their mode applied, the run key and folder;
and the jobs the attack loop runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch import nn

from mlattack.data.base import dataset_digest
from mlattack.data.datamodule import MultiLabelDataModule
from mlattack.defences import Defended, Preprocessing
from mlattack.errors import device_error
from mlattack.evaluation.job import AttackJob
from mlattack.evaluation.selection import (
    Selection,
    cached_selection,
    check_classes,
    select_correct_samples,
    selection_key,
)
from mlattack.evaluation.settings import AttackSettings, apply_mode, run_key
from mlattack.rundir.records import RunFolder
from mlattack.tracking import attack_runs as runs
from mlattack.tracking.lineage import ModelLineage, model_lineage
from mlattack.tracking.registry import load_network, weights_digest


@dataclass
class PreparedRun:
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
            folder = RunFolder(self.run_dir, name, n, figure, self.keep_examples,
                               exact_8bit=self.settings.quantize != "none", image_size=self.data.image_size)  # fmt: skip
            out.append(AttackJob(name, attack, self.selection.avg_labels, folder))
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


def prepare_run(model, client, tracking_uri, data, built, settings: AttackSettings, output_dir: Path,
             guard: tuple[Preprocessing, bool, int] | None = None) -> PreparedRun:  # fmt: skip
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
    if len(selection.indices) < s.num_samples and not launched_worker():
        print(f"Only {len(selection.indices)} correctly predicted samples exist (asked for {s.num_samples}); "
              "attacking those.")  # fmt: skip
    for (_, a, _), _ in built:  # the settings that run are the settings that are logged and hashed
        apply_mode(a, s.fast, s.precision)
    hp = {n: a.hyperparameters() for (n, a, _), _ in built}
    key = run_key(sel_key if defended is None else f"{sel_key}+{sorted(defended.items())}", hp,
                  [spec.num_samples for _, spec in built], s)  # fmt: skip
    return PreparedRun(lineage, digest, net, data, dataset, selection, s, built, hp, key, output_dir / key, device,
                defence=defended)  # fmt: skip


def launched_worker() -> bool:
    """True in a process that Lightning's DDP launcher started for a rank other than 0."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0
