"""Label embeddings for ML-GCN's graph nodes: loaded safely from a file, or an offline default.

The reference ships GloVe vectors as a pickled numpy C×300 array (``voc_glove_word2vec.pkl``). Unpickling runs
arbitrary code, so such files are read with a restricted unpickler that can only rebuild numpy arrays; ``.npy``
files are read with ``allow_pickle=False``. The format is recognised from the file's first bytes, not its name.

Without a file, :func:`default_label_embeddings` uses the 384-d sentence embeddings shipped in
``mlattack/resources/`` for the known datasets (made once by ``scripts/make_label_embeddings.py``), else one-hot
vectors. One-hot costs the semantic prior: the first graph-conv layer then just learns one free vector per label,
so related labels ("car", "bus") no longer start out close; label co-occurrence still flows through the graph, but
expect lower mAP than with word vectors, especially for rare labels.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from mlattack.data.base import DataFormatError

log = logging.getLogger(__name__)

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

# The only globals an array pickle needs, under numpy 1.x ("numpy.core") and 2.x ("numpy._core") module names.
_ALLOWED = {}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _reconstruct
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _frombuffer  # protocol-5 pickles of contiguous arrays
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles store the raw array bytes as ``_codecs.encode(text, "latin1")``; allow only that."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1_bytes

# Dataset name -> shipped file stem (both VOC years share the 20 VOC classes).
_RESOURCE_STEMS = {
    "voc2007": "voc",
    "voc2012": "voc",
    "voc": "voc",
    "coco2014": "coco2014",
    "coco": "coco2014",
}
_RESOURCE_STEMS |= {"nuswide": "nuswide", "nus-wide": "nuswide", "nus_wide": "nuswide"}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except the few numpy callables that rebuild an ndarray."""

    def __init__(self, file: io.BufferedIOBase, source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataFormatError(
                f"{self.source}: refusing to unpickle global {module}.{name}; a label-embedding pickle may only "
                "contain a numpy array (re-save it with numpy.save as .npy if it holds anything else)"
            ) from None


def load_label_embeddings(path: str | Path) -> torch.Tensor:
    """(C, D) float32 label embeddings from a ``.npy`` file or a pickled numpy array (reference format)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"label embeddings: file {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(6)
        f.seek(0)
        if head == b"\x93NUMPY":
            try:
                arr = np.load(f, allow_pickle=False)
            except ValueError as e:
                raise DataFormatError(f"{path}: unreadable .npy label embeddings ({e})") from e
        elif head[:1] == b"\x80":  # pickle protocol >= 2
            try:
                arr = _ArrayOnlyUnpickler(f, path).load()
            except DataFormatError:
                raise
            except Exception as e:
                raise DataFormatError(f"{path}: corrupt pickled label embeddings ({e})") from e
        else:
            raise DataFormatError(
                f"{path}: expected a .npy file or a pickled numpy array (C x D label embeddings)"
            )
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype.kind not in "fiu":
        what = (
            f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        )
        raise DataFormatError(f"{path}: expected a 2-D numeric (C x D) array of label embeddings, got {what}")
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise DataFormatError(f"{path}: label embeddings must be non-empty and finite, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def shipped_embeddings_file(dataset: str | None) -> Path | None:
    """The file in ``mlattack/resources/`` for a known dataset name, if it is installed."""
    if dataset is None:
        return None
    stem = _RESOURCE_STEMS.get(dataset.lower())
    if stem is None:
        return None
    path = Path(str(resources.files("mlattack") / "resources" / f"{stem}_label_embeddings.npy"))
    return path if path.is_file() else None


def default_label_embeddings(class_names: Sequence[str] | int, dataset: str | None = None) -> torch.Tensor:
    """Shipped embeddings for ``dataset`` when they exist and have one row per class, else one-hot (C×C).

    ``class_names`` may be the names or just their number C; only C is used (the shipped rows follow each
    dataset's canonical class order, which the data sources share).
    """
    num = class_names if isinstance(class_names, int) else len(class_names)
    if num <= 0:
        raise ValueError(f"class_names must name at least one class, got {num}")
    path = shipped_embeddings_file(dataset)
    if path is not None:
        emb = load_label_embeddings(path)
        if emb.shape[0] == num:
            return emb
        log.warning(
            "%s has %d rows but the dataset has %d classes; using one-hot embeddings", path, len(emb), num
        )
    return torch.eye(num)
