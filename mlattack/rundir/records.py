"""The per-sample records, panel previews and adversarial examples an attack run keeps on disk, and reading them
back after a crash.

Records are JSON lines appended (and fsynced) after every batch; the panel preview is rewritten atomically
(:mod:`mlattack.rundir.atomic`), and each batch's adversarial images go to one chunk file written the same way
(:mod:`mlattack.rundir.examples`); a sample recorded but without its image is attacked again for it (never
counted twice). Readers trust nothing: a line that is not UTF-8, not JSON, or misses a field or
has one of the wrong type is dropped — its sample has no record, so a resumed run attacks it again — and a panel
file that does not load is ignored, so its samples are attacked again for the picture (never counted twice).
"""

from __future__ import annotations

import glob
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mlattack.rundir.atomic import append_lines, torch_save_atomic
from mlattack.rundir.examples import (
    CHUNK_SUFFIX,
    chunk_glob,
    compact,
    compact_clean,
    stored_positions,
    write_chunk,
)

log = logging.getLogger(__name__)

#: the perturbation sizes each record holds (:func:`mlattack.evaluation.metrics.perturbation_norms`)
NORMS = ("l2", "l1", "linf", "rmsd", "mean_abs")
#: per-sample cost fields of a record (:mod:`mlattack.evaluation.cost`): passes per sample, the batch's peak MiB
COSTS = ("forwards", "backwards", "peak_mb")

_INT, _FLOAT, _BOOL, _STR, _NAMES = "int", "float", "bool", "str", "names"
#: every field a record needs, with its JSON type (what update_metric and the MLflow table read)
RECORD_FIELDS = {
    "position": _INT,
    "index": _INT,
    "sample_id": _STR,
    "true_labels": _NAMES,
    "labels_shown_names": _NAMES,
    "num_true": _INT,
    "labels_shown": _INT,
    "iterations": _INT,
    "reached": _BOOL,
    "loss": _FLOAT,
    "seconds": _FLOAT,
    "valid": _BOOL,
    "failure": _STR,
    **{n: _FLOAT for n in NORMS},
}
#: fields a record may lack (written before they existed) but may not have damaged
OPTIONAL_FIELDS = {**{c: _FLOAT for c in COSTS}, "started": _FLOAT}


def _typed(value: object, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def parse_record(raw: bytes) -> dict | None:
    """One record line, or None if it is damaged in any way (see module docstring)."""
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(rec, dict) or any(
        k not in rec or not _typed(rec[k], t) for k, t in RECORD_FIELDS.items()
    ):
        return None
    if any(k in rec and not _typed(rec[k], t) for k, t in OPTIONAL_FIELDS.items()):
        return None
    if rec["position"] < 0 or rec["labels_shown"] < 0 or not math.isfinite(rec["seconds"]):
        return None
    return rec


def read_records(path: Path) -> tuple[list[dict], int]:
    """The intact records of one file, in file order, and how many damaged lines were dropped."""
    records, damaged = [], 0
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        rec = parse_record(raw)
        if rec is None:
            damaged += 1
        else:
            records.append(rec)
    return records, damaged


def _panel_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and all(isinstance(entry.get(k), torch.Tensor) and entry[k].ndim == 3 for k in ("clean", "adv"))
        and all(isinstance(entry.get(k), list) for k in ("before", "after"))
    )


def read_panel(path: Path) -> dict[int, dict]:
    """The panel samples in one preview file; {} (and a warning) if it is empty, torn or not a panel."""
    try:
        panel = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - EOFError, zip errors, unpickling errors: all mean "redo it"
        log.warning(
            "panel preview %s is unreadable (%s: %s); its samples are attacked again for it",
            path,
            type(e).__name__,
            str(e)[:100],
        )
        return {}
    if not isinstance(panel, dict):
        return {}
    return {int(p): e for p, e in panel.items() if isinstance(p, int) and _panel_entry(e)}


class ImageKeeper(dict):
    """``job.panel``: the panel figure's samples (this dict's items: clean and adversarial image, labels before and
    after) and, when the job keeps every example, each sample's adversarial image, buffered compactly until
    :meth:`AttackJob.save_panel` writes the batch's chunk (:mod:`mlattack.rundir.examples`)."""

    def __init__(self, figure: tuple[int, ...] = (), keep: bool = False, exact_8bit: bool = False) -> None:
        super().__init__()
        self.figure, self.keep, self.exact_8bit = tuple(figure), bool(keep), bool(exact_8bit)
        self.pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # (adversarial, clean) not on disk yet
        self.stored: set[int] = set()  # positions whose images are on disk
        self.figure_changed = False

    def __setitem__(self, position: int, entry: dict) -> None:
        if position in self.figure:  # own copies: a view would save its whole batch's storage with it
            images = {k: v.clone() for k, v in entry.items() if isinstance(v, torch.Tensor)}
            super().__setitem__(position, {**entry, **images})
            self.figure_changed = True
        if self.keep:
            self.pending[position] = (compact(entry["adv"], self.exact_8bit), compact_clean(entry["clean"]))

    def missing(self, position: int) -> bool:
        """Whether a recorded sample must be attacked again for its picture or its stored image."""
        return (position in self.figure and not super().__contains__(position)) or (
            self.keep and position not in self.stored and position not in self.pending
        )


@dataclass
class RunFolder:
    """One attack's files in a run folder: where its records, panel preview and examples go, which samples it
    covers, and reading them back (every rank's) when the run resumes.

    ``figure_positions`` are the samples drawn in the run's panel; with ``keep_examples`` the adversarial image of
    every sample is kept as well (uint8 when ``exact_8bit``: the images are judged as 8-bit files). ``rank`` (set
    by the attack loop once DDP is up) picks this process's files; ``done`` holds the positions recorded so far.
    """

    run_dir: Path
    name: str  # the attack's name in the run: its files' stem
    num_samples: int  # the first ``num_samples`` positions of the selection
    figure_positions: tuple[int, ...] = (0, 1, 2, 3)
    keep_examples: bool = False
    exact_8bit: bool = False
    image_size: int | None = None  # side of the attacked images: a stored example of another size is redone
    rank: int = 0
    done: set[int] = field(default_factory=set)
    panel: ImageKeeper = field(default_factory=ImageKeeper)

    def __post_init__(self) -> None:
        self.panel = self.new_keeper()

    def new_keeper(self) -> ImageKeeper:
        return ImageKeeper(self.figure_positions, self.keep_examples, self.exact_8bit)

    @property
    def panel_positions(self) -> range | tuple[int, ...]:
        """The positions whose images the attack loop hands to ``panel``: every one when examples are kept."""
        return range(self.num_samples) if self.keep_examples else self.figure_positions

    @property
    def records_path(self) -> Path:
        """This process's record file (one per DDP rank, so no two processes append to one file)."""
        suffix = "" if self.rank == 0 else f".rank{self.rank}"
        return self.run_dir / f"{self.name}{suffix}.jsonl"

    @property
    def panel_path(self) -> Path:
        return self.records_path.with_suffix(".panel.pt")

    def record_files(self) -> list[Path]:
        pattern = f"{glob.escape(self.name)}.rank*.jsonl"
        return [self.run_dir / f"{self.name}.jsonl", *sorted(self.run_dir.glob(pattern))]

    def load_records(self) -> list[dict]:
        """All ranks' intact records of this job's positions, one per position (the first), in position order."""
        seen: dict[int, dict] = {}
        damaged = 0
        for path in self.record_files():
            if path.is_file():
                records, bad = read_records(path)
                damaged += bad
                for r in records:
                    if r["position"] < self.num_samples:
                        seen.setdefault(r["position"], r)
        if damaged:
            log.warning(
                "%s: %d damaged record line(s) dropped; those samples are attacked again", self.name, damaged
            )
        return [seen[p] for p in sorted(seen)]

    def load_panel(self) -> ImageKeeper:
        """The panel samples saved by every rank (unreadable files count as empty) and which examples are stored."""
        keeper = self.new_keeper()
        pattern = f"{glob.escape(self.name)}.rank*.panel.pt"
        for path in [self.run_dir / f"{self.name}.panel.pt", *sorted(self.run_dir.glob(pattern))]:
            if path.is_file():
                for p, e in read_panel(path).items():
                    if p in self.figure_positions:
                        dict.__setitem__(keeper, p, e)
        if self.keep_examples:
            keeper.stored = stored_positions(self.example_files(), self.image_size)
        return keeper

    def example_files(self) -> list[Path]:
        return chunk_glob(self.run_dir, self.name)

    def missing_panel(self, position: int) -> bool:
        return position in self.panel_positions and self.panel.missing(position)

    def append(self, records: list[dict]) -> None:
        """Persist records (fsynced before the next batch: what makes a killed run resumable)."""
        append_lines(self.records_path, [json.dumps(r) for r in records])
        self.done.update(r["position"] for r in records)

    def save_panel(self) -> None:
        """Rewrite the panel preview if a figure sample changed; write this batch's examples as one chunk."""
        keeper = self.panel
        if keeper.figure_changed:
            torch_save_atomic(dict(keeper), self.panel_path)
            keeper.figure_changed = False
        if keeper.pending:
            first = min(keeper.pending)
            write_chunk(
                self.run_dir / f"{self.name}.examples.{self.rank}.{first:07d}{CHUNK_SUFFIX}", keeper.pending
            )
            keeper.stored.update(keeper.pending)
            keeper.pending = {}
