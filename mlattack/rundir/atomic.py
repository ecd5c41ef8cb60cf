"""Crash-safe writes for the files a run rewrites or appends to (attack records, panel previews, selections).

A rewrite goes to a temporary file in the same folder, is fsynced and then renamed over the old file
(``os.replace`` is atomic on POSIX), so a ``kill -9`` at any byte leaves the old file or the new one, never a torn
one. An append is fsynced before the caller moves on and starts on a fresh line when a kill cut the previous one.
Every byte goes through :func:`_write`, the single seam where the fault-injection tests cut a write short.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def _write(f, data: bytes) -> None:
    """Write ``data`` to the open binary file ``f`` (kept as one function so tests can cut it at any byte)."""
    f.write(data)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where directories cannot be opened (some platforms)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _naming(path: Path):
    """A write's OSError names the file: ``write``/``fsync`` on an open file raise ENOSPC without a filename, and a
    full disk reported without its folder leaves the user guessing which disk to free."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file + fsync + ``os.replace`` (+ fsync of the folder)."""
    path = Path(path)
    with _naming(path):
        _write_atomic(path, data)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, text.encode("utf-8"))


def torch_save_atomic(obj: object, path: str | Path) -> None:
    """``torch.save`` through :func:`write_atomic`."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append text lines and fsync; if a kill cut the file's last line, start on a fresh line first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _naming(path), open(path, "ab+") as f:
        torn = False
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        _write(f, (("\n" if torn else "") + "\n".join(lines) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def remove_temp_files(folder: str | Path) -> int:
    """Delete the temp files that killed writers left in ``folder``; only safe while holding its run lock."""
    removed = 0
    for p in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()
            removed += 1
    return removed
