"""The PASCAL VOC devkit's files, read and checked: where the devkit is, its id lists and per-class label files,
and the XML annotations. :mod:`mlattack.data.voc` builds the datasets on them."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from mlattack.data.base import DataFormatError, require_file, where
from mlattack.errors import UserError, with_hint

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


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


def check_images(folder: Path, ids: list[str], split: str) -> None:
    """Every listed image is on disk: a devkit whose image archive was not unpacked (an empty ``JPEGImages/``)
    is reported now, by ``data stats`` too, rather than by the first batch of a fit."""
    missing = [i for i in ids if not (folder / f"{i}.jpg").is_file()]
    if not missing:
        return
    what = "none" if len(missing) == len(ids) else f"{len(missing)} missing"
    raise UserError(
        f"data.root: images missing: {folder} has {what} of the {len(ids)} images the {split} split lists "
        f"(first: {missing[0]}.jpg)",
        hint="unpack the VOC image archive (VOCtrainval/VOCtest .tar) into the devkit, so JPEGImages/ holds the .jpg "
        "files",
    )


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
