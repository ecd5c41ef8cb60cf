"""One LightningDataModule for every source, configured by source name and options (see configs/data/*.yaml).

Splits follow docs/PROTOCOL.md: each source maps "train" / "val" / "test" to its official files, and "test" is always
the split the attacks are evaluated on.
"""

from __future__ import annotations

import importlib
import inspect
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from mlattack.data.base import MultiLabelDataset, multiscale_crop_flip
from mlattack.data.stats import LabelStats, label_stats
from mlattack.errors import UserError

#: source name -> (module, class, whether it needs a ``root`` folder). Imports are lazy so a source's parser
#: dependencies (e.g. pycocotools) load only when that source is used. Add an entry to plug in a new source.
SOURCES: dict[str, tuple[str, str, bool]] = {
    "synthetic": ("mlattack.data.synthetic", "SyntheticMultiLabel", False),
    "voc2007": ("mlattack.data.voc", "VOC2007", True),
    "voc2012": ("mlattack.data.voc", "VOC2012", True),
    "coco2014": ("mlattack.data.coco", "COCO2014", True),
    "nuswide": ("mlattack.data.nuswide", "NUSWIDE", True),
}

Split = Literal["train", "val", "test"]


def source_class(source: str) -> type[MultiLabelDataset]:
    """The dataset class registered under ``source``."""
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; expected one of {sorted(SOURCES)}")
    module, cls_name, _ = SOURCES[source]
    return getattr(importlib.import_module(module), cls_name)


#: arguments the datamodule itself passes to every source; not valid in ``options``
_PASSED = ("root", "split", "image_size", "seed", "transform")


def check_options(source: str, options: dict[str, Any]) -> None:
    """Every key of ``options`` must be an argument of the source's class (options written for another source
    survive a later ``--data`` file that does not set ``options``: refuse them by name instead of a TypeError)."""
    params = inspect.signature(source_class(source)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [name for name in params if name not in _PASSED and name != "self"]
    for key in options:
        if key in _PASSED:
            raise UserError(f"data.options.{key}: set it as data.{key}, not inside data.options")
        if key not in accepted:
            raise UserError(
                f"data.options.{key}: not an option of source {source!r} (its options: {', '.join(accepted)})",
                hint="options of an earlier config are kept when a later --data file sets none: put `options: {}` "
                "in that file, or pass --data.options '{}'",
            )


def build_dataset(source: str, split: Split, root: str | None = None, **kwargs: Any) -> MultiLabelDataset:
    """Instantiate one split of a source by name (the CLI, tests and notebooks all come through here)."""
    cls = source_class(source)
    if SOURCES[source][2] and root is None:
        raise ValueError(
            f"data source {source!r} needs `root` (the dataset folder; see README for the layout)"
        )
    if root is not None:
        kwargs["root"] = root
    return cls(split=split, **kwargs)


class MultiLabelDataModule(pl.LightningDataModule):
    """Train/val/test loaders of one source; items are dicts (image, target, difficult, index).

    Args:
        source: the data source: "synthetic" (built in), "voc2007", "voc2012", "coco2014" or "nuswide".
        root: dataset folder (optional for "synthetic": if set, images are materialised there as PNG).
        image_size: side of the square the images are bilinearly resized to (448 in the paper configs).
        batch_size: samples per training batch.
        eval_batch_size: samples per validation/test batch (default: ``batch_size``).
        num_workers: DataLoader worker processes (0 loads in the main process).
        augment: ML-GCN's multi-scale crop + horizontal flip on the training split.
        seed: seeds the sources' train/val divisions (and the built-in dataset's generation).
        options: extra arguments of the source's class (e.g. ``num_classes`` for synthetic, ``layout`` for
            nuswide, ``train_split: trainval`` + ``val_split: test`` for VOC2007 as ML-GCN's reference trained it);
            checked against that class, so options meant for another source are refused by name.
        stats_cache: folder for cached label statistics (default: ``<root>/.mlattack`` when ``root`` is set).
    """

    def __init__(
        self,
        source: str = "synthetic",
        root: str | None = None,
        image_size: int = 448,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        augment: bool = True,
        seed: int = 123,
        options: dict[str, Any] | None = None,
        stats_cache: str | None = None,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"data.source: unknown source {source!r}; expected one of {sorted(SOURCES)}")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size or 1)):
            if value <= 0:
                raise ValueError(f"data.{name} must be > 0, got {value}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if image_size <= 0:
            raise ValueError(f"data.image_size must be > 0, got {image_size}")
        check_options(source, dict(options or {}))
        self.save_hyperparameters()
        self.source, self.root, self.image_size = source, root, int(image_size)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.num_workers, self.augment, self.seed = int(num_workers), bool(augment), int(seed)
        self.options = dict(options or {})
        cache = stats_cache or (str(Path(root) / ".mlattack") if root else None)
        self.stats_cache = cache
        self._datasets: dict[str, MultiLabelDataset] = {}

    def dataset(self, split: Split) -> MultiLabelDataset:
        """The split's dataset, built once (no augmentation: loaders add it for training)."""
        if split not in self._datasets:
            self._datasets[split] = build_dataset(
                self.source, split, self.root, image_size=self.image_size, seed=self.seed, **self.options
            )
        return self._datasets[split]

    @cached_property
    def class_names(self) -> list[str]:
        return list(self.dataset("train").class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label_stats(self, split: Split = "train") -> LabelStats:
        ds = self.dataset(split)
        official = getattr(ds, "official_split", split)  # e.g. VOC2007 "train" read from official trainval
        key = f"{self.source}-{split}{'' if official == split else '-' + official}-{self.image_size}"
        return label_stats(ds, self.stats_cache, key=key)

    # -- Lightning hooks ------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        splits: tuple[Split, ...] = {"fit": ("train", "val"), "validate": ("val",)}.get(
            stage or "", ("test",)
        )
        for split in splits:
            self.dataset(split)

    def _loader(self, split: Split, train: bool = False) -> DataLoader:
        ds = self.dataset(split)
        if train and self.augment:
            ds = ds.subset(range(len(ds)))  # a view, so the augmentation does not leak into other users
            ds.transform = multiscale_crop_flip(self.image_size)
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
