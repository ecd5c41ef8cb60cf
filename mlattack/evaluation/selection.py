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
from mlattack.rundir.atomic import write_text_atomic
from mlattack.scenarios import predicted_positive

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
        log.info(  # the attack command tells the user once, in its own words
            "only %d of the requested %d samples are predicted correctly in %s (%d rows); attacking those",
            len(keep),
            num_samples,
            dataset.name,
            scanned,
        )
    ids = [dataset.ids[i] for i in keep]
    avg = float(dataset.targets[keep].sum(1).mean()) if keep else 0.0
    return Selection(keep, ids, avg, num_samples, scanned)


def selection_key(*parts: object) -> str:
    """Cache key from what determines a selection: the model's weights digest, the data (source, root, split, size,
    options and :func:`dataset_digest`), N and the selection rule."""
    return hashlib.sha1(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def _check(sel: Selection, dataset: MultiLabelDataset | None, requested: int | None) -> bool:
    """Whether a stored selection can be what :func:`select_correct_samples` chose from ``dataset``: distinct rows in
    dataset order, each with its own id, no more than asked for (fewer only when the whole split was scanned), and
    the avgLabels those rows give."""
    idx = sel.indices
    ok = (
        len(idx) == len(sel.ids)
        and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx)
        and all(isinstance(i, str) for i in sel.ids)
        and all(a < b for a, b in zip(idx, idx[1:], strict=False))  # distinct, in dataset order
        and isinstance(sel.scanned, int)
        and (not idx or idx[-1] < sel.scanned)
    )
    if not ok or dataset is None:
        return ok
    n = len(dataset)
    if sel.scanned > n or any(i >= n for i in idx) or [str(dataset.ids[i]) for i in idx] != sel.ids:
        return False
    if requested is not None and (sel.requested != requested or len(idx) > requested):
        return False
    if requested is not None and len(idx) < requested and sel.scanned != n:
        return False  # fewer than asked for, yet the split was not read to its end
    avg = float(dataset.targets[idx].sum(1).mean()) if idx else 0.0
    return abs(float(sel.avg_labels) - avg) <= 1e-6 * max(1.0, avg)


def _load_cached(
    path: Path, key: str, dataset: MultiLabelDataset | None, requested: int | None
) -> Selection | None:
    """The stored selection, or None when the file is torn, not UTF-8/JSON, of another key, or could not have come
    from this split (see :func:`_check`)."""
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
        stored_key = raw.pop("key", key)
        sel = Selection(**raw)
        ok = stored_key == key and _check(sel, dataset, requested)
        sel.avg_labels = float(sel.avg_labels)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError, IndexError):
        ok = False
    if not ok:
        log.warning("selection cache %s is damaged or stale; selecting the samples again", path)
        return None
    return sel


def cached_selection(
    cache_dir: str | Path,
    key: str,
    compute,
    dataset: MultiLabelDataset | None = None,
    requested: int | None = None,
) -> Selection:
    """Load the selection stored under ``key`` or compute and store it (atomically: temp file, fsync, rename).

    A stored selection is checked against ``dataset`` (the split it was chosen from) and ``requested`` (N): one that
    repeats a sample, is out of order, names rows the split lacks or ids other than theirs, holds the wrong count
    or avgLabels is selected again rather than attacked.
    """
    path = Path(cache_dir) / f"selection-{key}.json"
    if path.is_file():
        sel = _load_cached(path, key, dataset, requested)
        if sel is not None:
            return sel
    sel = compute()
    write_text_atomic(path, json.dumps({**asdict(sel), "key": key}))
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


def check_classes(net: nn.Module, num_classes: int, source: str, image_size: int) -> None:
    """A model trained on another label set cannot be attacked on this data: say so before selecting samples."""
    n = getattr(net, "num_classes", None)
    if n is None:
        with torch.no_grad():
            n = net(torch.zeros(1, 3, image_size, image_size)).shape[-1]
    if int(n) != num_classes:
        raise ValueError(
            f"the model predicts {n} labels but data source {source!r} has {num_classes} classes; "
            "attack a model trained on this dataset"
        )
