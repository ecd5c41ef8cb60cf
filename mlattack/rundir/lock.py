"""One writer per run: a lock file with the holder's PID, host and heartbeat; file locks for store creation.

:class:`RunLock` takes an exclusive ``flock`` on ``<run dir>/writer.lock`` and writes who holds it (PID, host,
process start time, command) plus a heartbeat refreshed every few seconds. The kernel drops a ``flock`` when its
process dies, so the lock of a ``kill -9``-ed run is free at once and the next command takes it over; a second
command while the holder lives gets :class:`RunBusy`, naming the holder, and stops before touching the run. Where
the file system has no ``flock`` (some network mounts) the holder record alone decides: a holder whose process is
gone (same host) or whose heartbeat is older than ``stale_after`` seconds is stale and taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mlattack.errors import EnvironmentFault

log = logging.getLogger(__name__)

#: the holder record is rewritten in place at this size (JSON padded with spaces)
RECORD_SIZE = 1024


class RunBusy(EnvironmentFault):
    """Another live process is writing this run."""


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot; Linux), to tell a reused PID from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": process_start(os.getpid())}


def process_alive(holder: dict) -> bool | None:
    """Whether the process a holder record names still runs: None when it is on another host (unknowable here)."""
    if holder.get("host") != socket.gethostname():
        return None
    try:
        pid = int(holder["pid"])
        os.kill(pid, 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    start = process_start(pid)
    if start is None:  # a zombie (killed, not yet reaped) or no /proc: alive only if we cannot tell
        return not Path("/proc").is_dir()
    return holder.get("start") in (None, start)


def describe(holder: dict | None) -> str:
    if not holder:
        return "another process (its lock record is unreadable)"
    beat = holder.get("heartbeat")
    ago = f", last heartbeat {time.time() - float(beat):.0f} s ago" if isinstance(beat, (int, float)) else ""
    cmd = f", command: {holder['command']}" if holder.get("command") else ""
    return f"PID {holder.get('pid')} on {holder.get('host')}{ago}{cmd}"


class RunLock:
    """Exclusive, heartbeat-carrying lock of one run's output folder (see module docstring).

    Use as a context manager, or :meth:`acquire` / :meth:`release`. ``what`` names the run in messages.
    """

    def __init__(
        self, path: str | Path, what: str = "this run", heartbeat: float = 5.0, stale_after: float = 60.0
    ):
        self.path, self.what = Path(path), what
        self.heartbeat, self.stale_after = float(heartbeat), float(stale_after)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record: dict = {}

    def read(self) -> dict | None:
        """The holder record on file (None if absent or torn)."""
        try:
            rec = json.loads(self.path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return rec if isinstance(rec, dict) and rec.get("held") else None

    def _stale(self, holder: dict | None) -> bool:
        if holder is None:
            return True
        alive = process_alive(holder)
        if alive is not None:
            return not alive
        beat = holder.get("heartbeat")
        return not isinstance(beat, (int, float)) or time.time() - beat > self.stale_after

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.read()
            os.close(fd)
            raise RunBusy(self._busy_message(holder)) from None
        except OSError as e:  # no flock on this file system: the holder record decides
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            holder = self.read()
            if holder is not None and holder.get("pid") != os.getpid() and not self._stale(holder):
                os.close(fd)
                raise RunBusy(self._busy_message(holder)) from None
        self._fd = fd
        self._record = {
            **this_process(),
            "held": True,
            "since": time.time(),
            "command": " ".join(sys.argv)[:300],
        }
        self._beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat_loop, name="mlattack-run-lock", daemon=True)
        self._thread.start()
        return self

    def _busy_message(self, holder: dict | None) -> str:
        return (
            f"{self.what} is being written by {describe(holder)} (lock {self.path}). Wait for it to finish, or "
            "stop it and re-run the same command to resume it; two processes on one run would do and log the "
            "same work twice."
        )

    def _beat(self) -> None:
        if self._fd is None:
            return
        self._put(json.dumps({**self._record, "heartbeat": time.time()}).encode())

    def _put(self, data: bytes) -> None:
        """Overwrite the record in place, padded to a fixed size: a reader never sees it truncated to nothing."""
        data = data.ljust(RECORD_SIZE)
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self._beat()
            except OSError as e:  # a full disk must not kill the run: the lock itself is still held
                log.warning("run lock heartbeat failed: %s", e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self._put(json.dumps({"held": False, "released": time.time()}).encode())
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """A blocking exclusive ``flock`` on ``path`` for the block (e.g. while a new SQLite store is created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # no flock here: go on unlocked rather than fail (the race is the rare case)
            log.debug("no file lock on %s: %s", path, e)
        yield
    finally:
        os.close(fd)
