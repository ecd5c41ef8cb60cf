"""The built-in dataset: procedurally generated multi-label images, deterministic from a seed, no download.

Design (why it is a fair stand-in for VOC-like data):
- Each class is a *shape × colour* pair (``red_circle``, ``blue_triangle``, ...), so a classifier must bind two
  cues; distractor shapes in neutral colours, colour jitter, occlusion and scale changes keep it from being solved
  trivially to 100 %.
- Labels have **structured co-occurrence**: classes are partitioned into "scenes"; each image picks a scene and
  draws most of its objects from it, so P(j | i) is high inside a scene and low across — a label graph (ML-GCN's
  correlation matrix) carries real information, as on natural data.
- Label counts follow VOC/COCO-like statistics: 1 to ``max_labels`` positives per image (mean ≈ 2).
- Image ``i`` of split ``s`` is rendered from ``default_rng([seed, s, i])``: any image can be regenerated in
  isolation (on the fly, in any worker), and the whole dataset is reproducible bit for bit.
- ``root`` (optional) materialises the split on disk as PNG files plus ``labels.csv`` once and reads them back after,
  which is also a convenient way to look at the images.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mlattack.data.base import DataFormatError, MultiLabelDataset, load_rgb, where

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "bar", "star")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 210, 220),
    "orange": (245, 140, 30),
    "purple": (120, 50, 180),
    "lime": (160, 240, 60),
    "pink": (250, 150, 190),
}
DISTRACTOR_COLOURS = ((128, 128, 128), (200, 200, 200), (90, 70, 50), (30, 30, 30))
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES = {"train": 2000, "val": 500, "test": 500}


def synthetic_class_names(num_classes: int) -> list[str]:
    """``colour_shape`` names; colours vary fastest within a shape so small C still mixes both cues."""
    colours = list(COLOURS)
    if not 2 <= num_classes <= len(SHAPES) * len(colours):
        raise ValueError(f"num_classes must be in [2, {len(SHAPES) * len(colours)}], got {num_classes}")
    names = []
    per_shape = min(len(colours), max(2, int(np.ceil(num_classes / len(SHAPES)))))
    for k in range(num_classes):
        shape = SHAPES[(k // per_shape) % len(SHAPES)]
        colour = colours[(k % per_shape + k // (per_shape * len(SHAPES)) * per_shape) % len(colours)]
        names.append(f"{colour}_{shape}")
    if len(set(names)) != num_classes:  # fall back to a plain enumeration of all pairs
        names = [f"{c}_{s}" for s in SHAPES for c in colours][:num_classes]
    return names


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple, angle: float
) -> None:
    """Draw one object; sizes are radii in pixels."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        w = max(1.0, r * 0.38)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=int(round(w)))
    elif shape == "square":
        draw.regular_polygon((cx, cy, r), 4, rotation=45 + angle * 10, fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.65 * r, cy), (cx, cy + r), (cx - 0.65 * r, cy)], fill=fill)
    elif shape == "triangle":
        draw.regular_polygon((cx, cy, r), 3, rotation=angle * 20, fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = np.pi / 5 * k + angle
            pts.append((cx + rad * np.sin(a), cy - rad * np.cos(a)))
        draw.polygon(pts, fill=fill)
    elif shape == "cross":
        w = max(1.0, r * 0.35)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "bar":
        w = max(1.0, r * 0.3)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)


class SyntheticMultiLabel(MultiLabelDataset):
    """Procedurally generated multi-label images (see module docstring).

    Arguments:
        split: "train", "val" or "test" (the attacked split).
        num_classes: number of shape × colour classes (default 20, like VOC).
        num_samples: images in this split (default 2000 / 500 / 500).
        num_scenes: groups of classes that co-occur (default C // 4).
        max_labels: most positive labels per image.
        in_scene: probability that an object is drawn from the image's scene rather than any class.
        render_size: side of the rendered image (the dataset then resizes to ``image_size`` if different).
        root: optional folder to materialise the split as PNG + labels.csv (written once, read afterwards).
    """

    name = "synthetic"

    def __init__(
        self,
        split: Literal["train", "val", "test"] = "test",
        image_size: int = 64,
        transform: Callable | None = None,
        seed: int = 123,
        num_classes: int = 20,
        num_samples: int | None = None,
        num_scenes: int | None = None,
        max_labels: int = 4,
        in_scene: float = 0.85,
        num_distractors: int = 3,
        render_size: int | None = None,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(image_size, transform)
        if split not in SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
        n = DEFAULT_SIZES[split] if num_samples is None else int(num_samples)
        if n <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        if not 1 <= max_labels <= num_classes:
            raise ValueError(f"max_labels must be in [1, num_classes={num_classes}], got {max_labels}")
        self.split, self.seed = split, int(seed)
        self.class_names = synthetic_class_names(num_classes)
        self.num_scenes = max(1, num_classes // 4) if num_scenes is None else int(num_scenes)
        self.max_labels, self.in_scene, self.num_distractors = (
            int(max_labels),
            float(in_scene),
            int(num_distractors),
        )
        self.render_size = int(render_size or image_size)
        # The scene partition depends on the seed only, so all splits share one label structure.
        perm = np.random.default_rng([self.seed, 99]).permutation(num_classes)
        self.scenes = [sorted(perm[k :: self.num_scenes].tolist()) for k in range(self.num_scenes)]
        self._code = SPLIT_CODES[split]
        targets = np.stack([self._labels(i) for i in range(n)])
        self._finalize([f"{split}_{i:06d}" for i in range(n)], targets)
        self.root = Path(root) if root is not None else None
        if self.root is not None:
            self._materialise()

    # -- generation ---------------------------------------------------------------------------------------------
    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._code, index, stream])

    def _labels(self, index: int) -> np.ndarray:
        rng = self._rng(index, 0)
        c = self.num_classes
        k = int(min(self.max_labels, 1 + rng.binomial(self.max_labels - 1, 0.33)))
        scene = self.scenes[rng.integers(len(self.scenes))]
        chosen: set[int] = set()
        while len(chosen) < k:
            pool = scene if (rng.random() < self.in_scene and len(set(scene) - chosen) > 0) else range(c)
            chosen.add(int(rng.choice([j for j in pool if j not in chosen])))
        y = np.zeros(c, dtype=np.float32)
        y[list(chosen)] = 1.0
        return y

    def render(self, index: int) -> Image.Image:
        """Render image ``index`` from its own random stream (independent of every other image)."""
        rng = self._rng(index, 1)
        s = self.render_size
        # cluttered background: a random colour gradient plus blurred noise
        c0, c1 = rng.uniform(60, 190, 3), rng.uniform(60, 190, 3)
        t = np.linspace(0, 1, s)[:, None, None]
        bg = c0 * (1 - t) + c1 * t
        bg = np.broadcast_to(bg, (s, s, 3)) + rng.normal(0, 18, (s, s, 3))
        img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
        draw = ImageDraw.Draw(img)
        objects = [("distractor", j) for j in range(rng.integers(0, self.num_distractors + 1))]
        objects += [("label", int(j)) for j in np.flatnonzero(self.targets[index].numpy())]
        for o in rng.permutation(len(objects)):
            kind, j = objects[o]
            r = s * rng.uniform(0.09, 0.17)
            cx, cy = rng.uniform(r * 0.6, s - r * 0.6, 2)
            if kind == "label":
                colour_name, shape = self.class_names[j].split("_", 1)
                base = np.array(COLOURS[colour_name], dtype=float)
                fill = tuple(
                    int(v) for v in np.clip(base * rng.uniform(0.8, 1.1) + rng.normal(0, 12, 3), 0, 255)
                )
            else:
                shape = SHAPES[rng.integers(len(SHAPES))]
                fill = DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))]
                r *= 0.8
            draw_shape(draw, shape, cx, cy, r, fill, rng.uniform(0, 1))
        # a few thin occluding strokes
        for _ in range(rng.integers(0, 3)):
            x0, y0, x1, y1 = rng.uniform(0, s, 4)
            draw.line(
                [x0, y0, x1, y1], fill=tuple(int(v) for v in rng.uniform(40, 220, 3)), width=max(1, s // 40)
            )
        return img

    # -- on-disk form -------------------------------------------------------------------------------------------
    def _split_dir(self) -> Path:
        assert self.root is not None
        return self.root / f"seed{self.seed}-c{self.num_classes}-s{self.render_size}" / self.split

    def _materialise(self) -> None:
        """Write PNGs + labels.csv once; later instances read them back and check the labels agree."""
        d = self._split_dir()
        labels = d / "labels.csv"
        if not labels.exists():
            d.mkdir(parents=True, exist_ok=True)
            for i in range(len(self)):
                self.render(i).save(d / f"{self.ids[i]}.png")
            tmp = labels.with_suffix(".tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", *self.class_names])
                for i, row in enumerate(self.targets.int().tolist()):
                    w.writerow([self.ids[i], *row])
            tmp.replace(labels)  # atomic: a half-written folder is never taken as complete
            return
        with open(labels, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or rows[0] != ["id", *self.class_names] or len(rows) - 1 != len(self):
            raise DataFormatError(
                f"{where(labels, 1)}: header/row count does not match this dataset's settings "
                f"(expected {len(self)} rows of id + {self.num_classes} classes); delete the folder to regenerate"
            )

    def load_image(self, index: int) -> Image.Image:
        if self.root is not None:
            return load_rgb(self._split_dir() / f"{self.ids[index]}.png")
        return self.render(index)
