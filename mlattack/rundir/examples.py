"""Every adversarial example of an attack run, kept compact: per-batch chunks on disk while the run goes, one
``adversarial.npz`` artifact per attack (child run) when it ends.

Images judged on the 8-bit grid (quantize "floor" / "round") are stored exactly as uint8; float
images (quantize "none") as float16. The artifact holds, per sample: its selection position, dataset index and
sample id, the adversarial image, the clean image it was made from (uint8 when the clean images lie on the 8-bit
grid, float16 otherwise: what ``mlattack evaluate`` judges as the transfer table's clean baseline), and the true and
shown labels as multi-hot rows over ``class_names``. It is written and read with NumPy's npz format with
``allow_pickle=False``: loading one never runs code. Files written before clean images were kept have no ``clean``.
"""

from __future__ import annotations

import glob
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mlattack.rundir.atomic import write_atomic

log = logging.getLogger(__name__)

CHUNK_SUFFIX = ".npz"


def compact(image: torch.Tensor, exact_8bit: bool) -> np.ndarray:
    """(3, H, W) in [0, 1] -> uint8 (images on the 8-bit grid) or float16."""
    image = image.detach().float().cpu()
    if exact_8bit:
        return torch.round(image * 255.0).clamp(0, 255).to(torch.uint8).numpy()
    return image.to(torch.float16).numpy()


def compact_clean(image: torch.Tensor) -> np.ndarray:
    """A clean image, exactly: uint8 when it lies on the 8-bit grid (decoded image files), else float16."""
    image = image.detach().float().cpu()
    on_grid = torch.equal(torch.round(image * 255.0) / 255.0, image)
    return compact(image, on_grid)


def as_float(images: np.ndarray) -> torch.Tensor:
    """Stored images back to float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


def chunk_glob(run_dir: Path, name: str) -> list[Path]:
    """Every chunk file of attack ``name`` (all ranks); names with ``[...]`` (sweeps) are matched literally."""
    return sorted(Path(p) for p in glob.glob(str(run_dir / f"{glob.escape(name)}.examples.*{CHUNK_SUFFIX}")))


def write_chunk(path: Path, images: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
    """One batch's examples, {position: (adversarial, clean)}, written atomically (a kill leaves the old file or
    none)."""
    positions = sorted(images)
    buf = io.BytesIO()
    np.savez(buf, positions=np.array(positions, dtype=np.int64), adv=np.stack([images[p][0] for p in positions]),
             clean=_stack([images[p][1] for p in positions]))  # fmt: skip
    write_atomic(path, buf.getvalue())


def _check_images(images: np.ndarray, size: int | None) -> None:
    """Images of a chunk are (N, 3, size, size) uint8 or float16; anything else is a damaged (or foreign) chunk."""
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype not in (np.uint8, np.float16):
        raise ValueError(f"images of shape {images.shape} and type {images.dtype}, expected (N, 3, H, W)")
    if size is not None and images.shape[2:] != (size, size):
        raise ValueError(f"images of {images.shape[3]}x{images.shape[2]} pixels, expected {size}x{size}")


def read_chunk(path: Path, size: int | None = None) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    """{position: (adversarial, clean or None)} of one chunk; {} (and a warning) for a damaged file (torn, or images
    not (3, ``size``, ``size``)), whose samples are then redone."""
    try:
        with np.load(path, allow_pickle=False) as z:
            positions, adv = z["positions"], z["adv"]
            clean = z["clean"] if "clean" in z.files else None
        _check_images(adv, size)
        if clean is not None:
            _check_images(clean, size)
        else:
            clean = [None] * len(adv)
        if not len(positions) == len(adv) == len(clean):
            raise ValueError("positions and images differ in length")
    except Exception as e:  # noqa: BLE001 - torn zip, missing member, ...: all mean "redo these samples"
        log.warning("adversarial examples %s unreadable (%s); those samples are attacked again", path, e)
        return {}
    return {int(p): (a, c) for p, a, c in zip(positions, adv, clean, strict=True)}


def _stack(images: list[np.ndarray]) -> np.ndarray:
    """One array of images: uint8 if every one is, else float16 (uint8 ones scaled to [0, 1])."""
    if all(i.dtype == np.uint8 for i in images):
        return np.stack(images)
    return np.stack([as_float(i).numpy() for i in images]).astype(np.float16)


def stored_positions(paths: list[Path], size: int | None = None) -> set[int]:
    """The positions whose images are on disk (damaged chunks, see :func:`read_chunk`, hold none)."""
    return {p for path in paths for p in read_chunk(path, size)}


@dataclass
class Examples:
    """The content of one ``adversarial.npz``."""

    positions: np.ndarray
    indices: np.ndarray
    sample_ids: list[str]
    adv: np.ndarray  # (N, 3, H, W) uint8 or float16
    true: np.ndarray  # (N, C) bool
    shown: np.ndarray  # (N, C) bool, as judged on the attacked model
    class_names: list[str]
    clean: np.ndarray | None = None  # (N, 3, H, W) uint8 or float16; None in files written before it was kept

    def images(self, rows: slice | np.ndarray = slice(None)) -> torch.Tensor:
        return as_float(self.adv[rows])

    def clean_images(self, rows: slice | np.ndarray = slice(None)) -> torch.Tensor:
        if self.clean is None:
            raise ValueError("these examples were stored without their clean images")
        return as_float(self.clean[rows])

    def __len__(self) -> int:
        return len(self.positions)


def _multi_hot(names: list[list[str]], class_names: list[str]) -> np.ndarray:
    col = {c: j for j, c in enumerate(class_names)}
    out = np.zeros((len(names), len(class_names)), dtype=bool)
    for i, row in enumerate(names):
        out[i, [col[n] for n in row if n in col]] = True
    return out


def merge(
    chunks: list[Path], records: list[dict], class_names: list[str], dst: Path, size: int | None = None
) -> Path | None:
    """``adversarial.npz`` for the recorded samples whose images are on disk (None when there are none); ``size``:
    the images' side, a chunk of another size counts as damaged."""
    images: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    for path in chunks:
        for p, pair in read_chunk(path, size).items():
            images.setdefault(p, pair)
    rows = [r for r in records if r["position"] in images]
    if not rows:
        return None
    if len(rows) < len(records):
        log.warning(
            "%d of %d samples have no stored adversarial image", len(records) - len(rows), len(records)
        )
    clean = [images[r["position"]][1] for r in rows]
    extra = {} if any(c is None for c in clean) else {"clean": _stack(clean)}
    np.savez_compressed(
        dst,
        positions=np.array([r["position"] for r in rows], dtype=np.int64),
        indices=np.array([r["index"] for r in rows], dtype=np.int64),
        sample_ids=np.array([str(r["sample_id"]) for r in rows]),
        adv=np.stack([images[r["position"]][0] for r in rows]),
        true=_multi_hot([r["true_labels"] for r in rows], class_names),
        shown=_multi_hot([r["labels_shown_names"] for r in rows], class_names),
        class_names=np.array(class_names),
        **extra,
    )
    return dst


def load_examples(path: str | Path) -> Examples:
    """Read an ``adversarial.npz`` (no pickle: object arrays are refused)."""
    with np.load(path, allow_pickle=False) as z:
        missing = {"positions", "indices", "sample_ids", "adv", "true", "shown", "class_names"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not an mlattack adversarial-examples file (missing {sorted(missing)})")
        return Examples(
            positions=z["positions"], indices=z["indices"], sample_ids=[str(s) for s in z["sample_ids"]],
            adv=z["adv"], true=z["true"].astype(bool), shown=z["shown"].astype(bool),
            class_names=[str(c) for c in z["class_names"]], clean=z["clean"] if "clean" in z.files else None,
        )  # fmt: skip
