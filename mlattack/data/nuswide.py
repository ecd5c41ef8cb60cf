"""NUS-WIDE (81 concepts) from either the CSV the study used or the official release layout.

CSV layout (``layout="csv"``): ``root/nus_wide_data.csv`` (or ``csv_file``) with columns
``filepath,label,split_name``; ``filepath`` is relative to ``root``, ``label`` a Python-literal list of concept
names such as ``['sky', 'clouds']``, ``split_name`` "train" or "val".

Official layout (``layout="official"``)::

    Concepts81.txt                     (or ConceptsList/Concepts81.txt) the 81 names, one per line
    ImageList/TrainImagelist.txt       Windows-style paths such as ``actor\\0001_2124494179.jpg``
    ImageList/TestImagelist.txt
    Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt   one 0/1 per line, aligned with the image list
    Groundtruth/TrainTestLabels/Labels_<concept>_Test.txt
    Flickr/<path from the image list>  (``image_dir`` to change the folder)

Public copies of NUS-WIDE miss many images, so listed images absent on disk are skipped (one warning with the
count; ``num_missing`` keeps it). The train/val division is drawn over the *listed* rows before the skip, so an
image's train/val membership does not depend on which other images a copy happens to miss.
"""

from __future__ import annotations

import ast
import csv
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from mlattack.data.base import DataFormatError, MultiLabelDataset, load_rgb, require_file, seeded_split, where
from mlattack.errors import with_hint

NUS_WIDE_CONCEPTS: tuple[str, ...] = (
    "airport", "animal", "beach", "bear", "birds", "boats", "book", "bridge", "buildings", "cars", "castle",
    "cat", "cityscape", "clouds", "computer", "coral", "cow", "dancing", "dog", "earthquake", "elk", "fire",
    "fish", "flags", "flowers", "food", "fox", "frost", "garden", "glacier", "grass", "harbor", "horses",
    "house", "lake", "leaf", "map", "military", "moon", "mountain", "nighttime", "ocean", "person", "plane",
    "plants", "police", "protest", "railroad", "rainbow", "reflection", "road", "rocks", "running", "sand",
    "sign", "sky", "snow", "soccer", "sports", "statue", "street", "sun", "sunset", "surf", "swimmers",
    "tattoo", "temple", "tiger", "tower", "town", "toy", "train", "tree", "valley", "vehicle", "water",
    "waterfall", "wedding", "whales", "window", "zebra",
)  # fmt: skip

_SPLITS = ("train", "val", "test")
DEFAULT_CSV = "nus_wide_data.csv"
_CSV_COLUMNS = ("filepath", "label", "split_name")


def read_csv_layout(path: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """Rows of the study's CSV grouped by ``split_name``: {"train"|"val": (filepaths, targets)}."""
    col = {name: c for c, name in enumerate(NUS_WIDE_CONCEPTS)}
    out: dict[str, tuple[list[str], list[np.ndarray]]] = {"train": ([], []), "val": ([], [])}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataFormatError(
                f"{where(path, 1)}: header lacks column {missing[0]!r} (expected columns {','.join(_CSV_COLUMNS)})"
            )
        for row in reader:
            line = reader.line_num
            try:
                tags = ast.literal_eval((row["label"] or "").strip())
            except (ValueError, SyntaxError) as e:
                raise DataFormatError(
                    f"{where(path, line, 'label')}: cannot parse {row['label']!r} ({e}); "
                    "expected a Python list of tag names such as ['sky', 'clouds']"
                ) from e
            if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
                raise DataFormatError(
                    f"{where(path, line, 'label')}: expected a list of tag names, got {row['label']!r}"
                )
            target = np.zeros(len(NUS_WIDE_CONCEPTS), dtype=np.float32)
            for tag in tags:
                if tag not in col:
                    raise DataFormatError(
                        f"{where(path, line, 'label')}: unknown tag {tag!r} (expected one of the 81 NUS-WIDE concepts)"
                    )
                target[col[tag]] = 1.0
            split = (row["split_name"] or "").strip()
            if split not in out:
                raise DataFormatError(
                    f"{where(path, line, 'split_name')}: expected 'train' or 'val', got {split!r}"
                )
            filepath = (row["filepath"] or "").strip()
            if not filepath:
                raise DataFormatError(f"{where(path, line, 'filepath')}: empty file path")
            out[split][0].append(filepath)
            out[split][1].append(target)
    return {
        k: (paths, np.stack(t) if t else np.zeros((0, len(NUS_WIDE_CONCEPTS)), np.float32))
        for k, (paths, t) in out.items()
    }


def _lines(path: Path) -> list[str]:
    """Stripped lines without the trailing blank ones; a blank line inside would break the alignment."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for lineno, ln in enumerate(lines, start=1):
        if not ln:
            raise DataFormatError(f"{where(path, lineno)}: blank line (expected one entry per line)")
    return lines


def check_concepts(path: Path) -> None:
    """Concepts81.txt must list the 81 known concepts in the known (alphabetical) order."""
    lines = _lines(path)
    for lineno, (got, want) in enumerate(zip(lines, NUS_WIDE_CONCEPTS, strict=False), start=1):
        if got != want:
            raise DataFormatError(f"{where(path, lineno)}: expected concept {want!r}, got {got!r}")
    if len(lines) != len(NUS_WIDE_CONCEPTS):
        raise DataFormatError(f"{path}: {len(lines)} concepts listed, expected {len(NUS_WIDE_CONCEPTS)}")


def read_official_layout(root: Path, part: Literal["Train", "Test"]) -> tuple[list[str], np.ndarray]:
    """Image paths (forward slashes, relative to the image folder) and targets of the official Train/Test part."""
    concepts = next(
        (p for p in (root / "Concepts81.txt", root / "ConceptsList" / "Concepts81.txt") if p.is_file()), None
    )
    check_concepts(require_file(concepts or root / "Concepts81.txt", "NUS-WIDE concept list"))
    image_list = require_file(root / "ImageList" / f"{part}Imagelist.txt", "NUS-WIDE image list")
    paths = [p.replace("\\", "/") for p in _lines(image_list)]
    gt = next((d for d in (root / "Groundtruth", root / "GroundTruth") if d.is_dir()), root / "Groundtruth")
    targets = np.zeros((len(paths), len(NUS_WIDE_CONCEPTS)), dtype=np.float32)
    for c, concept in enumerate(NUS_WIDE_CONCEPTS):
        label_file = require_file(
            gt / "TrainTestLabels" / f"Labels_{concept}_{part}.txt", "NUS-WIDE label file"
        )
        values = _lines(label_file)
        for lineno, v in enumerate(values, start=1):
            if v not in ("0", "1"):
                raise DataFormatError(f"{where(label_file, lineno)}: expected 0 or 1, got {v!r}")
        if len(values) != len(paths):
            raise DataFormatError(
                f"{label_file}: {len(values)} labels, expected {len(paths)} (one per line of {image_list})"
            )
        targets[:, c] = np.asarray(values) == "1"
    return paths, targets


def _find_listed(root: Path, listed: str) -> Path | None:
    """Where a listed image actually is: the listed path, or its tail, under ``root`` or one folder below."""
    parts = Path(listed).parts
    for base in (root, *sorted(d for d in root.iterdir() if d.is_dir())):
        for k in range(len(parts)):
            candidate = base.joinpath(*parts[k:])
            if candidate.is_file():
                return candidate
    return None


class NUSWIDE(MultiLabelDataset):
    """NUS-WIDE multi-label classification over the 81 concepts, in alphabetical order.

    Args:
        root: dataset folder (see the module docstring for both layouts).
        split: protocol split. "test" (attacked) = the CSV's "val" rows or the official Test list;
            "train"/"val" = a seeded division of the CSV's "train" rows or of the official Train list.
        image_size: side of the square the images are resized to.
        transform: optional tensor transform applied after resizing.
        seed: seed of the train/val division.
        val_fraction: fraction of the training rows going to "val" (default 0.1).
        layout: "csv", "official", or "auto" (csv when the CSV file exists, else official).
        csv_file: CSV path, absolute or relative to ``root`` (default ``nus_wide_data.csv``).
        image_dir: folder holding the official layout's images, relative to ``root``.

    Attributes:
        num_missing: listed images of this split absent on disk (skipped).
    """

    name = "nuswide"

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val", "test"] = "test",
        image_size: int = 448,
        transform: Callable | None = None,
        seed: int = 123,
        val_fraction: float = 0.1,
        layout: Literal["auto", "official", "csv"] = "auto",
        csv_file: str | None = None,
        image_dir: str = "Flickr",
    ) -> None:
        super().__init__(image_size, transform)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if layout not in ("auto", "official", "csv"):
            raise ValueError(f"layout must be 'auto', 'official' or 'csv', got {layout!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"NUS-WIDE root {self.root} does not exist (expected {DEFAULT_CSV} with images, or the official "
                "layout: Concepts81.txt, ImageList/, Groundtruth/TrainTestLabels/, Flickr/)"
            )
        csv_path = self.root / (csv_file or DEFAULT_CSV)
        if layout == "auto":
            if not csv_path.is_file() and not (self.root / "ImageList").is_dir():
                raise FileNotFoundError(
                    f"NUS-WIDE: neither {csv_path} (CSV layout) nor {self.root / 'ImageList'} (official layout) "
                    "exists; see mlattack.data.nuswide for the expected layouts"
                )
            layout = "csv" if csv_path.is_file() else "official"
        self.layout, self.split = layout, split
        self.class_names = list(NUS_WIDE_CONCEPTS)

        if layout == "csv":
            parts = read_csv_layout(
                require_file(csv_path, "NUS-WIDE CSV (columns filepath,label,split_name)")
            )
            self.official_split = "val" if split == "test" else "train"
            paths, targets = parts[self.official_split]
            self.image_root = self.root
        else:
            self.official_split = "Test" if split == "test" else "Train"
            paths, targets = read_official_layout(self.root, self.official_split)
            self.image_root = self.root / image_dir
        if split != "test":
            val_rows, train_rows = seeded_split(len(paths), val_fraction, seed)
            keep = train_rows if split == "train" else val_rows
            paths, targets = [paths[i] for i in keep], targets[keep]

        present = [(self.image_root / p).is_file() for p in paths]
        self.num_missing = len(paths) - sum(present)
        if paths and not any(present):
            raise self._no_images(paths, csv_path if layout == "csv" else None)
        if self.num_missing:
            warnings.warn(
                f"NUS-WIDE {split}: {self.num_missing} of {len(paths)} listed images are missing under "
                f"{self.image_root} and were skipped",
                stacklevel=2,
            )
        keep = [i for i, ok in enumerate(present) if ok]
        self._finalize([paths[i] for i in keep], targets[keep])

    def _no_images(self, paths: list[str], csv_path: Path | None) -> FileNotFoundError:
        """Not one listed image on disk: the image folder is elsewhere. Say where the first one is, if it is."""
        where_listed = f"{csv_path}'s filepath column" if csv_path else "data.options.image_dir"
        error = FileNotFoundError(
            f"data.root: none of the {len(paths)} NUS-WIDE {self.split} images is under {self.image_root} "
            f"(e.g. {self.image_root / paths[0]}); expected them where {where_listed} says"
        )
        found = _find_listed(self.root, paths[0])
        if found is None:
            hint = "the official layout reads <root>/<image_dir>/<path in the image list> (image_dir: Flickr)"
        elif csv_path is None and found.as_posix().endswith("/" + paths[0]):
            folder = found.relative_to(self.root).as_posix()[: -len(paths[0]) - 1]
            hint = f"{paths[0]} is at {found}: set data.options.image_dir to {folder!r}"
        else:
            hint = f"{paths[0]} is at {found}: listed paths are read relative to {self.image_root}"
        return with_hint(error, hint)

    def load_image(self, index: int):
        return load_rgb(self.image_root / self.ids[index])
