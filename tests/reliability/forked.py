"""Real processes to kill, started in milliseconds: children of a fork server that imported torch, Lightning, MLflow
and mlattack once (a fresh ``mlattack`` process spends most of its first seconds importing them).

Each child is a separate process with its own SQLite connections and file handles, so ``kill -9`` on it is what a
user's ``kill -9`` is. A child can also kill itself in the middle of a file write: :func:`cut_writes` makes the
n-th write to a matching file stop after a chosen fraction of its bytes and ``SIGKILL`` the process there, which
is exactly the state a kill at that byte leaves on disk.
"""

from __future__ import annotations

import fnmatch
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

from pytorch_lightning.callbacks import Callback

PRELOAD = ["tests.reliability.warm"]
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(PRELOAD)


def start(target, *args) -> multiprocessing.Process:
    proc = _CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def finish(proc: multiprocessing.Process, timeout: float) -> int:
    """Wait for ``proc`` (killing it if it overruns ``timeout``) and return its exit code (-9: killed)."""
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(10)
        raise AssertionError(f"child {proc.pid} ran past {timeout:.0f} s")
    return proc.exitcode


def kill_after(proc: multiprocessing.Process, seconds: float) -> None:
    """``kill -9`` the child after ``seconds`` unless it has ended; reaped (no zombie holds its PID)."""
    proc.join(seconds)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)


def child_setup(tracking_uri: str) -> None:
    """What every child does first: its own store, one thread, the toy data source registered."""
    import torch

    from mlattack.data.datamodule import SOURCES

    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    torch.set_num_threads(1)
    SOURCES["toy"] = ("tests.evaluation.toy", "ToyColours", False)


def cut_writes(pattern: str, nth: int, fraction: float, log: Path) -> None:
    """Make the ``nth`` write to a file whose name matches ``pattern`` stop after ``fraction`` of its bytes, note
    it in ``log``, and ``SIGKILL`` this process (writes go through :func:`mlattack.rundir.atomic._write`)."""
    from mlattack.rundir import atomic

    original, seen = atomic._write, [0]

    def write(f, data: bytes) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{f.fileno()}"))  # temp files too
        if fnmatch.fnmatch(name, pattern):
            seen[0] += 1
            if seen[0] == nth:
                cut = int(len(data) * fraction)
                original(f, data[:cut])
                f.flush()
                with open(log, "a") as out:
                    out.write(json.dumps({"file": name, "cut": cut, "of": len(data)}) + "\n")
                os.kill(os.getpid(), signal.SIGKILL)
        original(f, data)

    atomic._write = write


class Progress(Callback):
    """Notes when the attack pass starts and each batch ends (seconds since the child started) and sleeps
    ``pause`` seconds per batch, so random kills land inside the attack loop as often as around it."""

    def __init__(self, log: Path, pause: float = 0.0) -> None:
        self.path, self.pause, self.t0 = log, pause, time.monotonic()

    def _note(self, what: str) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"what": what, "t": time.monotonic() - self.t0}) + "\n")

    def on_test_start(self, trainer, pl_module) -> None:
        self._note("start")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        time.sleep(self.pause)
        self._note("batch")

    def on_test_end(self, trainer, pl_module) -> None:
        self._note("end")  # attacks done; the MLflow logging follows


def progress_notes(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


class HoldAtFirstBatch(Callback):
    """Wait at the end of the first batch until ``release`` exists (a run that is certainly live meanwhile)."""

    def __init__(self, release: Path, timeout: float = 300.0) -> None:
        self.release, self.timeout = release, timeout

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        deadline = time.monotonic() + self.timeout
        while batch_idx == 0 and not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def wait_until(predicate, proc: multiprocessing.Process, timeout: float, what: str):
    """Poll ``predicate`` until truthy; fail if ``proc`` ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if not proc.is_alive():
            raise AssertionError(f"child ended (exit {proc.exitcode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
