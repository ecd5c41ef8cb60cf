"""Which samples are attacked (docs/PROTOCOL.md): the first N of the attacked split, in dataset order, whose clean
prediction equals the ground truth on every label (difficult labels count as negative) and that have at least one
positive label."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from mlattack.data.base import MultiLabelDataset
from mlattack.evaluation.scenarios import predicted_positive

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """The attacked samples: row numbers in the attacked dataset (in dataset order) and their ids."""

    indices: list[int]
    ids: list[str]
    avg_labels: float
    requested: int
    scanned: int  # how many rows of the split were looked at

    def head(self, n: int, targets: torch.Tensor) -> Selection:
        """The first ``n`` samples (a per-attack override such as N=200 for MLA-LP), with their own avgLabels."""
        idx = self.indices[:n]
        avg = float(targets[idx].sum(1).mean()) if idx else 0.0
        return Selection(idx, self.ids[:n], avg, n, self.scanned)


def correct_mask(logits: torch.Tensor, targets: torch.Tensor, min_positive: int = 1) -> torch.Tensor:
    """(N,) bool: prediction (sigmoid >= 0.5) equals the target on every label and at least ``min_positive``
    labels are positive (the study's ML-GCN driver asks for 1, its ML-LIW driver for 2).

    ``targets`` must already hold difficult labels as 0 (the datasets do).
    """
    pos = targets > 0.5
    return (predicted_positive(logits) == pos).all(dim=1) & (pos.sum(dim=1) >= max(1, int(min_positive)))


@torch.no_grad()
def select_correct_samples(
    net: nn.Module,
    dataset: MultiLabelDataset,
    num_samples: int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    min_positive: int = 1,
) -> Selection:
    """Scan the split in order and keep the first ``num_samples`` correctly predicted samples.

    Stops reading as soon as enough samples are found. If the split has fewer, all of them are returned and a
    warning says how many.
    """
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    was_training = net.training
    net.eval()
    keep: list[int] = []
    scanned = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        for batch in loader:
            logits = net(batch["image"].to(device)).float().cpu()
            ok = correct_mask(logits, batch["target"], min_positive)
            keep.extend((scanned + torch.nonzero(ok).flatten()).tolist())  # rows of `dataset`, in order
            scanned += len(ok)
            if len(keep) >= num_samples:
                break
    finally:
        net.train(was_training)
    keep = keep[:num_samples]
    if len(keep) < num_samples:
        log.warning(
            "only %d of the requested %d samples are predicted correctly in %s (%d rows); attacking those",
            len(keep), num_samples, dataset.name, scanned,
        )
    ids = [dataset.ids[i] for i in keep]
    avg = float(dataset.targets[keep].sum(1).mean()) if keep else 0.0
    return Selection(keep, ids, avg, num_samples, scanned)


def selection_key(*parts: object) -> str:
    """Cache key from what determines a selection: model identity, data source/split/size, N."""
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def cached_selection(cache_dir: str | Path, key: str, compute) -> Selection:
    """Load the selection stored under ``key`` or compute and store it (atomically)."""
    path = Path(cache_dir) / f"selection-{key}.json"
    if path.is_file():
        return Selection(**json.loads(path.read_text()))
    sel = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(sel)))
    tmp.replace(path)
    return sel


class SelectedSamples(torch.utils.data.Dataset):
    """The selected rows of a dataset, in selection order; items gain ``position`` and ``sample_id``."""

    def __init__(self, dataset: MultiLabelDataset, selection: Selection) -> None:
        self.dataset, self.selection = dataset, selection

    def __len__(self) -> int:
        return len(self.selection.indices)

    def __getitem__(self, position: int) -> dict:
        item = self.dataset[self.selection.indices[position]]
        item["position"] = position
        item["sample_id"] = self.selection.ids[position]
        return item
