"""MS-COCO 2014 image-level labels (80 categories) from the official ``instances_*2014.json`` files.

Layout under ``root``::

    annotations/instances_train2014.json
    annotations/instances_val2014.json
    train2014/<file_name>        (file_name as written in the JSON)
    val2014/<file_name>

The JSON is read with :mod:`json` so that a broken file is reported with its line and column, checked for the
fields the loader needs, and then handed to pycocotools, which builds the image → annotation index.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO

from mlattack.data.base import (
    DataFormatError,
    MultiLabelDataset,
    load_rgb,
    require_dir,
    require_file,
    seeded_split,
)

_SPLITS = ("train", "val", "test")
_REQUIRED = {
    "images": ("id", "file_name"),
    "annotations": ("id", "image_id", "category_id"),
    "categories": ("id", "name"),
}


def read_instances(path: Path) -> dict[str, Any]:
    """Parse and validate an instances JSON; errors name the file and the offending field or position."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(
            f"{path}:{e.lineno}:{e.colno}: malformed JSON ({e.msg}); expected a COCO instances annotation file"
        ) from e
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: top level is {type(data).__name__}, expected a JSON object")
    for key, fields in _REQUIRED.items():
        if key not in data:
            raise DataFormatError(f"{path}: missing required field {key!r} (expected a COCO instances file)")
        if not isinstance(data[key], list):
            raise DataFormatError(f"{path}: field {key!r} must be a list, got {type(data[key]).__name__}")
        for k, entry in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if missing:
                raise DataFormatError(f"{path}: {key}[{k}] lacks required field {missing[0]!r}")
    return data


def build_coco(data: dict[str, Any]) -> COCO:
    """A pycocotools index over already-loaded data (its constructor would re-read the file and print)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class COCO2014(MultiLabelDataset):
    """COCO 2014 multi-label classification: an image's labels are the categories of its annotations.

    Category ids (1..90 with gaps) are sorted ascending and mapped to contiguous indices 0..C-1; class names come
    from ``categories``. Rows are in ascending image id. Images without any annotation (about 1% of COCO) are
    kept as all-negative rows; crowd annotations count as labels like any other.

    Args:
        root: folder with ``annotations/``, ``train2014/`` and ``val2014/``.
        split: protocol split. "test" = val2014 (attacked); "train"/"val" = a seeded division of train2014.
        image_size: side of the square the images are resized to.
        transform: optional tensor transform applied after resizing.
        seed: seed of the train/val division.
        val_fraction: fraction of train2014 going to "val" (default 0.1: the study trained on all of train2014,
            so the held-out part is kept small).
    """

    name = "coco2014"

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] = "test",
        image_size: int = 448,
        transform: Callable | None = None,
        seed: int = 123,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(image_size, transform)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.root = require_dir(root, "COCO2014 root (expected annotations/, train2014/, val2014/)")
        self.split = split
        self.official_split = "val2014" if split == "test" else "train2014"
        self.ann_file = require_file(
            self.root / "annotations" / f"instances_{self.official_split}.json", "COCO2014 annotations"
        )
        self.image_dir = self.root / self.official_split

        coco = build_coco(read_instances(self.ann_file))
        cat_ids = sorted(coco.cats)
        if len(cat_ids) != len(coco.dataset["categories"]):
            raise DataFormatError(f"{self.ann_file}: duplicate category ids in 'categories'")
        col = {cid: c for c, cid in enumerate(cat_ids)}
        self.category_ids = cat_ids
        self.class_names = [str(coco.cats[cid]["name"]) for cid in cat_ids]

        img_ids = sorted(coco.imgs)
        row = {iid: r for r, iid in enumerate(img_ids)}
        targets = np.zeros((len(img_ids), len(cat_ids)), dtype=np.float32)
        for ann in coco.anns.values():
            if ann["category_id"] not in col:
                raise DataFormatError(
                    f"{self.ann_file}: annotation id {ann['id']} has category_id {ann['category_id']!r}, "
                    "which is not in 'categories'"
                )
            if ann["image_id"] not in row:
                raise DataFormatError(
                    f"{self.ann_file}: annotation id {ann['id']} has image_id {ann['image_id']!r}, "
                    "which is not in 'images'"
                )
        for r, iid in enumerate(img_ids):
            for ann in coco.imgToAnns.get(iid, ()):
                targets[r, col[ann["category_id"]]] = 1.0
        file_names = [str(coco.imgs[i]["file_name"]) for i in img_ids]

        if split != "test":
            val_rows, train_rows = seeded_split(len(img_ids), val_fraction, seed)
            keep = train_rows if split == "train" else val_rows
            img_ids, file_names, targets = (
                [img_ids[i] for i in keep],
                [file_names[i] for i in keep],
                targets[keep],
            )
        self.image_ids: list[int] = img_ids
        self.file_names: list[str] = file_names
        self._finalize([str(i) for i in img_ids], targets)

    def load_image(self, index: int):
        return load_rgb(self.image_dir / self.file_names[index])
