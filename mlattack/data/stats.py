"""Label statistics per split: what ML-GCN's graph, the attack scenarios and the MLflow params need.

Computed from the target table only (no image is opened), and cached as JSON next to the data so large sources
(COCO, NUS-WIDE) are summarised once. The cache is keyed by a fingerprint of ids and targets, so a changed
annotation file never serves stale numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from mlattack.data.base import MultiLabelDataset

log = logging.getLogger(__name__)


@dataclass
class LabelStats:
    """Statistics of one split. ``cooccurrence[i, j]`` counts images with both i and j (diagonal = class counts)."""

    num_images: int
    avg_labels: float
    class_names: list[str]
    class_counts: list[int]
    cooccurrence: list[list[int]]
    difficult_counts: list[int]
    fingerprint: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def cooccurrence_matrix(self) -> np.ndarray:
        return np.asarray(self.cooccurrence, dtype=np.float64)

    def label_counts(self) -> np.ndarray:
        return np.asarray(self.class_counts, dtype=np.float64)

    def as_params(self, prefix: str = "data") -> dict[str, object]:
        """Flat scalar summary for experiment trackers (MLflow params)."""
        counts = np.asarray(self.class_counts)
        return {
            f"{prefix}.num_images": self.num_images,
            f"{prefix}.num_classes": self.num_classes,
            f"{prefix}.avg_labels": round(self.avg_labels, 4),
            f"{prefix}.min_class_count": int(counts.min()) if counts.size else 0,
            f"{prefix}.max_class_count": int(counts.max()) if counts.size else 0,
        }

    def table(self) -> str:
        """Per-class counts and top co-occurring partner as a Markdown table."""
        m = self.cooccurrence_matrix()
        lines = [
            f"images: {self.num_images}   classes: {self.num_classes}   avg labels/image: {self.avg_labels:.3f}",
            "",
            "| # | class | images | share | most co-occurring (P(j|i)) |",
            "|---|---|---|---|---|",
        ]
        for i, name in enumerate(self.class_names):
            row = m[i].copy()
            row[i] = -1
            j = int(row.argmax()) if self.num_classes > 1 else i
            p = m[i, j] / m[i, i] if m[i, i] > 0 and j != i else 0.0
            share = self.class_counts[i] / max(self.num_images, 1)
            lines.append(
                f"| {i} | {name} | {self.class_counts[i]} | {share:.3f} | {self.class_names[j]} ({p:.2f}) |"
            )
        return "\n".join(lines)


def _fingerprint(ds: MultiLabelDataset) -> str:
    h = hashlib.sha1()
    h.update("\n".join(ds.class_names).encode())
    h.update("\n".join(ds.ids).encode())
    h.update(ds.targets.to(torch.uint8).numpy().tobytes())
    h.update(ds.difficult.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def compute_label_stats(ds: MultiLabelDataset) -> LabelStats:
    """Statistics from the target table (difficult labels count as negative, as in the attack protocol)."""
    y = ds.targets.double()
    co = (y.T @ y).round().long()
    return LabelStats(
        num_images=len(ds),
        avg_labels=float(y.sum(1).mean()) if len(ds) else 0.0,
        class_names=list(ds.class_names),
        class_counts=y.sum(0).round().long().tolist(),
        cooccurrence=co.tolist(),
        difficult_counts=ds.difficult.sum(0).long().tolist(),
        fingerprint=_fingerprint(ds),
    )


def label_stats(ds: MultiLabelDataset, cache_dir: str | Path | None = None, key: str = "") -> LabelStats:
    """Stats of ``ds``, read from / written to ``cache_dir/stats-<key>.json`` when a cache dir is given."""
    if cache_dir is None:
        return compute_label_stats(ds)
    path = Path(cache_dir) / f"stats-{key or ds.name}.json"
    fp = _fingerprint(ds)
    if path.is_file():
        try:
            cached = LabelStats(**json.loads(path.read_text()))
            if cached.fingerprint == fp:
                return cached
        except (ValueError, TypeError) as e:
            log.warning("ignoring unreadable statistics cache %s (%s); recomputing", path, e)
    stats = compute_label_stats(ds)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(stats)))
        tmp.replace(path)
    except OSError as e:  # read-only dataset folders are common; the stats are still returned
        log.warning("could not cache label statistics at %s (%s)", path, e)
    return stats
