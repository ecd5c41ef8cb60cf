"""The one dataset interface every data source implements.

A source parses its annotations once into three aligned tables — sample ids, a multi-hot target matrix and a
"difficult" mask — and knows how to open the image behind each id. Everything else (resizing to a square in
[0, 1], augmentation, statistics, sample selection for attacks) is shared and lives here or in the datamodule, so
a new source is ~100 lines of parsing.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2 as T


class DataFormatError(ValueError):
    """Bad input on disk: the message names the file (and line/field) and what was expected."""


def where(path: str | Path, line: int | None = None, field: str | None = None) -> str:
    """Format a location for error messages: ``file:line (field)``."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field is not None:
        out += f" (field {field!r})"
    return out


def require_dir(path: str | Path, what: str) -> Path:
    """Fail early and clearly when a dataset root or sub-folder is missing."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what}: directory {p} does not exist (expected the dataset's on-disk layout, see README)"
        )
    return p


def require_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what}: file {p} does not exist")
    return p


def _sixteen_bit_to_l(path: Path, arr: np.ndarray) -> Image.Image:
    """A 16-bit grayscale image as 8-bit "L": value v becomes round(v * 255 / 65535), as image libraries do."""
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DataFormatError(
            f"{path}: integer image with values in [{arr.min():.0f}, {arr.max():.0f}]; expected 8- or 16-bit "
            "(0..65535) pixels"
        )
    return Image.fromarray(np.rint(arr * (255.0 / 65535.0)).astype(np.uint8), mode="L")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file fully (so truncation is detected here) and convert any mode to RGB.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted; 16-bit ("I;16"/"I") images are scaled by
    their bit depth (65535 -> 255), not by their own maximum, so a mid-grey image stays mid-grey. A missing, zero-size, truncated or undecodable file raises
    :class:`DataFormatError` naming the file.
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise DataFormatError(f"{p}: image file is empty (expected a JPEG/PNG image)")
        with Image.open(p) as im:
            im.load()
            if im.width == 0 or im.height == 0:
                raise DataFormatError(f"{p}: image has zero size {im.size}")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                im = _sixteen_bit_to_l(p, np.asarray(im, dtype=np.float64))
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise DataFormatError(f"{p}: image file not found") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataFormatError(
            f"{p}: unreadable or truncated image ({e}); expected a valid JPEG/PNG file"
        ) from e


def pil_to_tensor01(im: Image.Image) -> torch.Tensor:
    """PIL RGB image -> float tensor (3, H, W) in [0, 1]."""
    arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def multiscale_crop_flip(
    image_size: int, scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66, 0.5)
) -> Callable:
    """ML-GCN's training augmentation on a [0,1] tensor: random crop of a random scale, resize back, h-flip."""
    scales = tuple(scales)

    def apply(img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        sh = scales[int(torch.randint(len(scales), ()))]
        sw = scales[int(torch.randint(len(scales), ()))]
        ch, cw = max(1, int(round(h * sh))), max(1, int(round(w * sw)))
        top = int(torch.randint(h - ch + 1, ()))
        left = int(torch.randint(w - cw + 1, ()))
        img = img[:, top : top + ch, left : left + cw]
        img = T.functional.resize(img, [image_size, image_size], antialias=True)
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img.clamp_(0, 1)

    return apply


class MultiLabelDataset(Dataset, ABC):
    """Base of every source. Subclasses fill the tables in ``__init__`` and implement :meth:`load_image`.

    Attributes (aligned, one row per sample, in the dataset's canonical order):
        ids: sample identifiers (file stem, COCO image id, ...), used in logs and result tables.
        targets: (N, C) float multi-hot {0, 1}. Difficult labels are 0 here.
        difficult: (N, C) bool, True where the annotation says "difficult" (VOC only; all False elsewhere).
        class_names: C names in the canonical order.

    ``__getitem__`` returns ``{"image": (3, S, S) float in [0,1], "target": (C,), "difficult": (C,) bool,
    "index": int}``; the index is the row in this dataset, so selections and resumes are reproducible.
    """

    name: str = "dataset"

    def __init__(self, image_size: int = 448, transform: Callable | None = None) -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size}")
        self.image_size = int(image_size)
        self.transform = transform
        self.ids: list[str] = []
        self.class_names: list[str] = []
        self.targets = torch.zeros(0, 0)
        self.difficult = torch.zeros(0, 0, dtype=torch.bool)

    @abstractmethod
    def load_image(self, index: int) -> Image.Image | torch.Tensor:
        """The RGB image of row ``index``: a PIL image, or a (3, H, W) tensor in [0, 1]."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    def _finalize(self, ids: list[str], targets: np.ndarray | torch.Tensor, difficult=None) -> None:
        """Store the tables with consistent dtypes and check their shapes agree."""
        t = torch.as_tensor(np.asarray(targets), dtype=torch.float32).reshape(len(ids), len(self.class_names))
        d = (
            torch.zeros_like(t, dtype=torch.bool)
            if difficult is None
            else torch.as_tensor(np.asarray(difficult), dtype=torch.bool).reshape(t.shape)
        )
        self.ids, self.targets, self.difficult = list(ids), t, d & (t == 0)

    def subset(self, rows: Sequence[int]) -> MultiLabelDataset:
        """A view on some rows (the tables are sliced; images are still loaded lazily)."""
        return _Subset(self, list(rows))

    def __getitem__(self, index: int) -> dict:
        img = self.load_image(index)
        if isinstance(img, Image.Image):
            if img.size != (self.image_size, self.image_size):
                img = img.resize((self.image_size, self.image_size), Image.BILINEAR)
            x = pil_to_tensor01(img)
        else:
            x = img.float()
            if x.shape[-2:] != (self.image_size, self.image_size):
                x = T.functional.resize(x, [self.image_size, self.image_size], antialias=True).clamp_(0, 1)
        if self.transform is not None:
            x = self.transform(x)
        return {"image": x, "target": self.targets[index], "difficult": self.difficult[index], "index": index}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, classes={self.num_classes}, image_size={self.image_size})"
        )


class _Subset(MultiLabelDataset):
    """Rows of a parent dataset; ``index`` in the returned items stays the *parent's* row number."""

    def __init__(self, parent: MultiLabelDataset, rows: list[int]) -> None:
        super().__init__(parent.image_size, parent.transform)
        self.parent, self.rows = parent, rows
        self.name = parent.name
        self.class_names = parent.class_names
        idx = torch.as_tensor(rows, dtype=torch.long)
        self.ids = [parent.ids[r] for r in rows]
        self.targets, self.difficult = parent.targets[idx], parent.difficult[idx]

    def load_image(self, index: int):
        return self.parent.load_image(self.rows[index])

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        item["index"] = self.rows[index]
        return item


def dataset_digest(dataset: MultiLabelDataset) -> str:
    """The split's content as the sample selection and the fit's lineage see it: sample ids and (difficult-as-negative) targets, in order."""
    h = hashlib.sha256(json.dumps(list(map(str, dataset.ids))).encode())
    h.update(dataset.targets.detach().cpu().to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def seeded_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Divide rows 0..n-1 into (first, second) with ``fraction`` in the first, reproducibly from ``seed``.

    Both parts are returned in ascending (dataset) order so that "dataset order" stays meaningful.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    k = int(round(n * fraction))
    return sorted(perm[:k].tolist()), sorted(perm[k:].tolist())
