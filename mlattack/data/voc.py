"""PASCAL VOC 2007 / 2012 classification labels, read from the official devkit layout.

``root`` may be the folder that contains ``VOCdevkit/VOC2007`` (or ``VOC2007`` directly), or the ``VOC2007``
folder itself; inside it the loader reads::

    ImageSets/Main/<split>.txt            one image id per line (optional; else the first class file's ids)
    ImageSets/Main/<class>_<split>.txt    "<image_id> <1|-1|0>" for each of the 20 classes
    Annotations/<image_id>.xml            only with label_source="annotations"
    JPEGImages/<image_id>.jpg

Protocol splits (docs/PROTOCOL.md): VOC2007 maps train/val/test to the official splits of the same name by default;
``train_split="trainval"`` trains on the official trainval (ML-GCN's reference) and then ``val_split="test"``
validates on the official test set, as that reference did. VOC2012 has no public test labels, so its official
``val`` is the attacked "test" split and the official ``train`` is divided 80/20 (seeded) into train/val.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from mlattack.data.base import DataFormatError, MultiLabelDataset, load_rgb, require_file, seeded_split
from mlattack.data.voc_files import (
    VOC_CLASSES,
    check_images,
    find_voc_dir,
    image_ids,
    labels_from_imagesets,
    labels_from_xml,
)

_SPLITS = ("train", "val", "test")
_TRAIN_SPLITS = ("train", "trainval")
_VAL_SPLITS = ("val", "test")


def check_official_splits(year: str, train_split: str, val_split: str) -> None:
    """``train_split`` / ``val_split`` values, and that val is not inside the training images."""
    if train_split not in _TRAIN_SPLITS:
        raise ValueError(f"train_split must be one of {_TRAIN_SPLITS}, got {train_split!r}")
    if val_split not in _VAL_SPLITS:
        raise ValueError(f"val_split must be one of {_VAL_SPLITS}, got {val_split!r}")
    if year != "2007" and (train_split, val_split) != ("train", "val"):
        raise ValueError(
            f"train_split/val_split choose official VOC2007 splits; VOC{year} divides its official train into "
            f"train/val (got train_split={train_split!r}, val_split={val_split!r})"
        )
    if train_split == "trainval" and val_split == "val":
        raise ValueError(
            "val_split: 'val' is part of train_split 'trainval'; use val_split='test' (ML-GCN's reference) or "
            "train_split='train'"
        )


def official_split_labels(
    voc_dir: Path, split: str, label_source: str
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, targets and difficult mask of one official split; ``trainval`` without its own files is train + val.

    The devkit ships ``<class>_trainval.txt``; a tree with only train and val gets their union in id order,
    which is what the official trainval lists hold.
    """
    main = voc_dir / "ImageSets" / "Main"
    has_files = (main / f"{split}.txt").is_file() or (main / f"{VOC_CLASSES[0]}_{split}.txt").is_file()
    if split == "trainval" and not has_files:
        train, val = (official_split_labels(voc_dir, s, label_source) for s in ("train", "val"))
        ids = train[0] + val[0]
        if len(set(ids)) != len(ids):
            raise DataFormatError(f"{main}: train and val share image ids, so they cannot form trainval")
        order = np.argsort(np.array(ids), kind="stable")
        both = (np.concatenate([train[k], val[k]])[order] for k in (1, 2))
        return [ids[i] for i in order], *both
    if label_source == "imagesets":
        return labels_from_imagesets(main, split)
    ids = image_ids(main, split)[0]
    rows = [
        labels_from_xml(require_file(voc_dir / "Annotations" / f"{i}.xml", "VOC annotation")) for i in ids
    ]
    return ids, np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


class VOCDataset(MultiLabelDataset):
    """PASCAL VOC multi-label classification (20 classes); "difficult" labels are negative and masked.

    Args:
        root: the folder containing ``VOCdevkit/VOC<year>`` (or ``VOC<year>``), or the ``VOC<year>`` folder.
        year: "2007" or "2012".
        split: protocol split; "test" is the attacked one (2007: official test, 2012: official val).
        image_size: side of the square the images are resized to.
        transform: optional tensor transform applied after resizing (e.g. train augmentation).
        seed: seed of the VOC2012 train/val division (unused for 2007).
        val_fraction: fraction of VOC2012's official train going to "val" (unused for 2007).
        label_source: "imagesets" (the ``<class>_<split>.txt`` files) or "annotations" (``Annotations/*.xml``;
            image ids still come from ``ImageSets/Main/<split>.txt`` or the first class file).
        train_split: official split behind "train", VOC2007 only: "train" or "trainval" (ML-GCN's reference).
        val_split: official split behind "val", VOC2007 only: "val" or "test" ("test" = model selection on the
            test set, as ML-GCN's reference did; required with ``train_split="trainval"``, which contains val).

    Attributes:
        official_split: the official VOC split the rows come from, for logging.
    """

    def __init__(
        self,
        root: str | Path,
        year: Literal["2007", "2012"] = "2007",
        split: Literal["train", "val", "test"] = "test",
        image_size: int = 448,
        transform: Callable | None = None,
        seed: int = 123,
        val_fraction: float = 0.2,
        label_source: Literal["imagesets", "annotations"] = "imagesets",
        train_split: Literal["train", "trainval"] = "train",
        val_split: Literal["val", "test"] = "val",
    ) -> None:
        super().__init__(image_size, transform)
        year = str(year)
        if year not in ("2007", "2012"):
            raise ValueError(f"year must be '2007' or '2012', got {year!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if label_source not in ("imagesets", "annotations"):
            raise ValueError(f"label_source must be 'imagesets' or 'annotations', got {label_source!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        check_official_splits(year, train_split, val_split)
        self.name = f"voc{year}"
        self.year, self.split, self.label_source = year, split, label_source
        self.voc_dir = find_voc_dir(root, year)
        if year == "2007":
            self.official_split = {"train": train_split, "val": val_split, "test": "test"}[split]
        else:
            self.official_split = "val" if split == "test" else "train"
        self.class_names = list(VOC_CLASSES)

        ids, targets, difficult = official_split_labels(self.voc_dir, self.official_split, label_source)
        if year == "2012" and split != "test":
            val_rows, train_rows = seeded_split(len(ids), val_fraction, seed)
            keep = train_rows if split == "train" else val_rows
            ids, targets, difficult = [ids[i] for i in keep], targets[keep], difficult[keep]
        check_images(self.voc_dir / "JPEGImages", ids, self.official_split)
        self._finalize(ids, targets, difficult)

    def load_image(self, index: int):
        return load_rgb(self.voc_dir / "JPEGImages" / f"{self.ids[index]}.jpg")


class VOC2007(VOCDataset):
    """VOC2007: train/val/test are the official splits (train may be trainval, val may be test); test (4,952
    images) is attacked."""

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] = "test",
        image_size: int = 448,
        transform: Callable | None = None,
        seed: int = 123,
        val_fraction: float = 0.2,
        label_source: Literal["imagesets", "annotations"] = "imagesets",
        train_split: Literal["train", "trainval"] = "train",
        val_split: Literal["val", "test"] = "val",
    ) -> None:
        super().__init__(root, "2007", split, image_size, transform, seed, val_fraction, label_source,
                         train_split=train_split, val_split=val_split)  # fmt: skip


class VOC2012(VOCDataset):
    """VOC2012: official train divided 80/20 (seeded) into train/val; official val is the attacked test."""

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] = "test",
        image_size: int = 448,
        transform: Callable | None = None,
        seed: int = 123,
        val_fraction: float = 0.2,
        label_source: Literal["imagesets", "annotations"] = "imagesets",
    ) -> None:
        super().__init__(root, "2012", split, image_size, transform, seed, val_fraction, label_source)
