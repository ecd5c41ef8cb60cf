"""Builders of tiny dataset trees in the real on-disk formats (VOC devkit, COCO JSON, NUS-WIDE CSV/official).

Every image is a small solid-colour JPEG whose colour is derived from its id, so a test can check that
``dataset[i]`` opened the right file by looking at the pixel values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from PIL import Image

from mlattack.data.nuswide import NUS_WIDE_CONCEPTS
from mlattack.data.voc import VOC_CLASSES

IMAGE_SIZE = (32, 24)  # PIL (width, height): not square, so the loader's resize is exercised


def colour_of(key: str) -> tuple[int, int, int]:
    """A distinct, reproducible mid-range colour per key (away from 0/255 so JPEG error does not clip)."""
    h = hashlib.sha256(key.encode()).digest()
    return tuple(30 + b % 196 for b in h[:3])  # type: ignore[return-value]


def write_image(path: Path, key: str | None = None, size: tuple[int, int] = IMAGE_SIZE) -> Path:
    """A solid-colour image (format from the suffix) coloured by ``key`` (default: the file stem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour_of(key or path.stem)).save(path, quality=95)
    return path


# ---------------------------------------------------------------------------------------------------- VOC

# id -> {class: 1 present | 0 difficult}; classes not named are absent (-1).
VOC_LABELS: dict[str, dict[str, int]] = {
    "000001": {"person": 1, "dog": 1},
    "000002": {"car": 1, "person": 0},
    "000003": {"aeroplane": 1},
    "000004": {"tvmonitor": 1, "sofa": 1, "chair": 0},
    "000005": {"cat": 1},
    "000006": {"bird": 1, "bicycle": 0},
    "000007": {"horse": 1, "person": 1},
    "000008": {"bottle": 1, "diningtable": 1},
}
VOC2007_SPLITS = {
    "train": ["000001", "000002", "000003"],
    "val": ["000004", "000005"],
    "test": ["000006", "000007", "000008"],
}
# VOC2012: ten official-train images (80/20 -> 8/2) and three official-val images.
VOC2012_LABELS = {f"2012_{i:06d}": {VOC_CLASSES[i % 20]: 1, VOC_CLASSES[(i * 7) % 20]: 0} for i in range(13)}
VOC2012_SPLITS = {"train": sorted(VOC2012_LABELS)[:10], "val": sorted(VOC2012_LABELS)[10:]}


def voc_xml(labels: dict[str, int]) -> str:
    objects = "".join(
        f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{1 - v}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
        "</bndbox></object>"
        for c, v in labels.items()
    )
    return f"<annotation><folder>VOC</folder><size><width>32</width><height>24</height></size>{objects}</annotation>"


def make_voc(
    root: Path,
    year: str = "2007",
    labels: dict[str, dict[str, int]] | None = None,
    splits: dict[str, list[str]] | None = None,
    split_lists: bool = True,
) -> Path:
    """Write ``root/VOCdevkit/VOC<year>`` and return ``root``; ``split_lists=False`` omits ``<split>.txt``."""
    if labels is None:
        labels = VOC_LABELS if year == "2007" else VOC2012_LABELS
    if splits is None:
        splits = VOC2007_SPLITS if year == "2007" else VOC2012_SPLITS
    voc = root / "VOCdevkit" / f"VOC{year}"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (voc / "Annotations").mkdir()
    for split, ids in splits.items():
        if split_lists:
            (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for cls in VOC_CLASSES:
            lines = "".join(f"{i} {labels[i].get(cls, -1):2d}\n" for i in ids)
            (main / f"{cls}_{split}.txt").write_text(lines)
        for i in ids:
            write_image(voc / "JPEGImages" / f"{i}.jpg")
            (voc / "Annotations" / f"{i}.xml").write_text(voc_xml(labels[i]))
    return root


# ---------------------------------------------------------------------------------------------------- COCO

# Non-contiguous ids listed out of order: the loader must sort them (1 -> 0, 3 -> 1, 18 -> 2, 90 -> 3).
COCO_CATEGORIES = [(18, "dog"), (1, "person"), (90, "toothbrush"), (3, "car")]
# split -> [(image id, file name, category ids)], deliberately not in id order; 7 has no annotation.
COCO_IMAGES = {
    "train2014": [
        (100 + k, f"COCO_train2014_{100 + k:012d}.jpg", [(1, 3, 18, 90)[k % 4]]) for k in range(10, 0, -1)
    ],
    "val2014": [
        (42, "COCO_val2014_000000000042.jpg", [1, 18, 1]),
        (7, "COCO_val2014_000000000007.jpg", []),
        (13, "COCO_val2014_000000000013.jpg", [90, 3]),
    ],
}


def coco_instances(images: list[tuple[int, str, list[int]]], categories=COCO_CATEGORIES) -> dict:
    anns, ann_id = [], 1
    for img_id, _, cats in images:
        for cat in cats:
            anns.append({"id": ann_id, "image_id": img_id, "category_id": cat, "bbox": [1, 1, 5, 5], "area": 25.0,
                         "iscrowd": 0, "segmentation": []})  # fmt: skip
            ann_id += 1
    return {
        "info": {"description": "tiny test fixture"},
        "images": [{"id": i, "file_name": f, "width": 32, "height": 24} for i, f, _ in images],
        "annotations": anns,
        "categories": [{"id": c, "name": n, "supercategory": "x"} for c, n in categories],
    }


def make_coco(root: Path, images: dict | None = None) -> Path:
    """Write ``root/annotations/instances_{train,val}2014.json`` and the images; return ``root``."""
    images = COCO_IMAGES if images is None else images
    (root / "annotations").mkdir(parents=True)
    for part, imgs in images.items():
        (root / "annotations" / f"instances_{part}.json").write_text(
            json.dumps(coco_instances(imgs), indent=1)
        )
        for _, name, _ in imgs:
            write_image(root / part / name)
    return root


# ---------------------------------------------------------------------------------------------------- NUS-WIDE

# (file path relative to root, tags, split_name); twenty "train" rows -> 18/2 at 90/10.
NUS_CSV_ROWS = [
    (f"images/{k:04d}_{1000 + k}.jpg", [NUS_WIDE_CONCEPTS[k % 81], NUS_WIDE_CONCEPTS[(k * 5) % 81]], "train")
    for k in range(20)
] + [
    ("images/9001_1.jpg", ["sky", "clouds"], "val"),
    ("images/9002_2.jpg", [], "val"),
    ("images/9003_3.jpg", ["zebra", "airport", "toy"], "val"),
]


def make_nuswide_csv(
    root: Path, rows=None, missing: set[str] = frozenset(), name: str = "nus_wide_data.csv"
) -> Path:
    """Write the study's CSV and the images it lists except ``missing``; return ``root``."""
    rows = NUS_CSV_ROWS if rows is None else rows
    root.mkdir(parents=True, exist_ok=True)
    lines = ["filepath,label,split_name"]
    for path, tags, split in rows:
        lines.append(f'{path},"{tags!r}",{split}')
        if path not in missing:
            write_image(root / path)
    (root / name).write_text("\n".join(lines) + "\n")
    return root


# official part -> [(Windows-style path under Flickr/, tags)]
NUS_OFFICIAL = {
    "Train": [
        (f"{NUS_WIDE_CONCEPTS[k % 81]}\\{k:04d}_{2000 + k}.jpg", [NUS_WIDE_CONCEPTS[(k * 3) % 81]])
        for k in range(10)
    ],
    "Test": [
        ("actor\\0001_2124494179.jpg", ["person", "sky"]),
        ("zoo\\0002_77.jpg", ["zebra"]),
        ("zoo\\0003_78.jpg", []),
    ],
}


def make_nuswide_official(root: Path, parts=None, missing: set[str] = frozenset()) -> Path:
    """Write Concepts81.txt, ImageList/, Groundtruth/TrainTestLabels/ and Flickr/ images; return ``root``."""
    parts = NUS_OFFICIAL if parts is None else parts
    (root / "ImageList").mkdir(parents=True)
    labels_dir = root / "Groundtruth" / "TrainTestLabels"
    labels_dir.mkdir(parents=True)
    (root / "Concepts81.txt").write_text("\n".join(NUS_WIDE_CONCEPTS) + "\n")
    for part, rows in parts.items():
        (root / "ImageList" / f"{part}Imagelist.txt").write_text("".join(f"{p}\r\n" for p, _ in rows))
        for concept in NUS_WIDE_CONCEPTS:
            values = "".join(f"{int(concept in tags)}\n" for _, tags in rows)
            (labels_dir / f"Labels_{concept}_{part}.txt").write_text(values)
        for p, _ in rows:
            if p not in missing:
                write_image(root / "Flickr" / p.replace("\\", "/"))
    return root
