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

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from mlattack.data.base import DataFormatError, MultiLabelDataset, load_rgb, require_file, seeded_split, where
from mlattack.errors import UserError, with_hint

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

_SPLITS = ("train", "val", "test")
_TRAIN_SPLITS = ("train", "trainval")
_VAL_SPLITS = ("val", "test")


def find_voc_dir(root: str | Path, year: str) -> Path:
    """Accept ``root`` = folder holding ``VOCdevkit/VOC<year>`` or ``VOC<year>``, or the ``VOC<year>`` folder.

    A folder named for the other year (``VOC2007`` given to voc2012, or the reverse) is refused: the two devkits
    have the same layout, so it would load the wrong dataset without a word, or fail on a file the other year
    lacks.
    """
    root = Path(root).expanduser()
    for cand in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if (cand / "ImageSets" / "Main").is_dir():
            named = re.fullmatch(r"VOC(\d{4})", cand.name)
            if named and named.group(1) != year:
                raise UserError(
                    f"data.root: {root} is the VOC{named.group(1)} devkit but the source is voc{year}",
                    hint=f"use --data.source voc{named.group(1)}, or point data.root at the VOC{year} folder",
                )
            return cand
    others = sorted(
        {p.name for base in (root, root / "VOCdevkit") for p in base.glob("VOC[0-9][0-9][0-9][0-9]")}
    )
    error = FileNotFoundError(
        f"data.root: no VOC{year} devkit at {root} (expected {root}/VOCdevkit/VOC{year}/ImageSets/Main, "
        f"{root}/VOC{year}/ImageSets/Main or {root}/ImageSets/Main, with JPEGImages/ beside ImageSets/)"
    )
    hint = f"found {', '.join(others)} there: use --data.source {others[0].lower()}" if others else None
    raise with_hint(error, hint)


def read_id_list(path: Path) -> list[str]:
    """``ImageSets/Main/<split>.txt``: exactly one image id per non-empty line, no duplicates."""
    ids: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 1:
            raise DataFormatError(
                f"{where(path, lineno)}: expected one image id per line, got {line.strip()!r}"
            )
        if tokens[0] in seen:
            raise DataFormatError(f"{where(path, lineno)}: image id {tokens[0]!r} is listed twice")
        seen.add(tokens[0])
        ids.append(tokens[0])
    if not ids:
        raise DataFormatError(f"{path}: image list is empty (expected one image id per line)")
    return ids


def read_class_file(path: Path) -> list[tuple[int, str, int]]:
    """``<class>_<split>.txt`` as (line number, image id, label in {1, -1, 0})."""
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2 or tokens[1] not in ("1", "-1", "0"):
            raise DataFormatError(
                f"{where(path, lineno)}: expected '<image_id> <1|-1|0>' (1 present, -1 absent, 0 difficult), "
                f"got {line.strip()!r}"
            )
        rows.append((lineno, tokens[0], int(tokens[1])))
    return rows


def _class_file(main: Path, cls: str, split: str) -> Path:
    return require_file(main / f"{cls}_{split}.txt", f"VOC class list for {cls!r}")


def image_ids(main: Path, split: str) -> tuple[list[str], Path]:
    """The split's image ids and the file they come from: ``<split>.txt``, else the first class file."""
    split_list = main / f"{split}.txt"
    if split_list.is_file():
        return read_id_list(split_list), split_list
    first = _class_file(main, VOC_CLASSES[0], split)
    ids = [r[1] for r in read_class_file(first)]
    if not ids:
        raise DataFormatError(f"{first}: no image listed (expected '<image_id> <1|-1|0>' lines)")
    return ids, first


def labels_from_imagesets(main: Path, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Targets and difficult mask from the 20 per-class files; every file must list the same ids."""
    ids, ids_source = image_ids(main, split)
    class_files = [_class_file(main, c, split) for c in VOC_CLASSES]
    row_of = {img_id: i for i, img_id in enumerate(ids)}
    targets = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.float32)
    difficult = np.zeros_like(targets, dtype=bool)
    for c, path in enumerate(class_files):
        seen = np.zeros(len(ids), dtype=bool)
        for lineno, img_id, label in read_class_file(path):
            row = row_of.get(img_id)
            if row is None:
                raise DataFormatError(
                    f"{where(path, lineno)}: image id {img_id!r} is not listed in {ids_source}"
                )
            if seen[row]:
                raise DataFormatError(f"{where(path, lineno)}: image id {img_id!r} is listed twice")
            seen[row] = True
            targets[row, c] = label == 1
            difficult[row, c] = label == 0
        if not seen.all():
            missing = [ids[i] for i in np.flatnonzero(~seen)[:5]]
            raise DataFormatError(
                f"{path}: {int((~seen).sum())} image id(s) of {ids_source} are missing, e.g. {missing} "
                "(every class file must list the same ids)"
            )
    return ids, targets, difficult


def labels_from_xml(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One image's (target, difficult) rows from its ``Annotations/<id>.xml``.

    A class is a target when at least one of its objects is not difficult, and "difficult" when all of its
    objects are — the same rule the devkit uses to write the 1/0 entries of the ImageSets files.
    """
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise DataFormatError(f"{path}: malformed XML ({e}); expected a VOC annotation file") from e
    objects = tree.getroot().findall("object")
    if not objects:
        raise DataFormatError(
            f"{path}: annotation has no <object> element (expected at least one labelled object)"
        )
    target = np.zeros(len(VOC_CLASSES), dtype=np.float32)
    difficult = np.zeros(len(VOC_CLASSES), dtype=bool)
    for k, obj in enumerate(objects, start=1):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DataFormatError(
                f"{path}: object #{k} has unknown class name {name!r} (expected one of the 20 VOC classes)"
            )
        flag = (obj.findtext("difficult") or "0").strip()
        if flag not in ("0", "1"):
            raise DataFormatError(f"{path}: object #{k} has <difficult>{flag}</difficult>, expected 0 or 1")
        c = VOC_CLASSES.index(name)
        if flag == "0":
            target[c] = 1.0
        else:
            difficult[c] = True
    return target, difficult & (target == 0)


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
