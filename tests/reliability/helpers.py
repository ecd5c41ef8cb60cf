"""Real processes for the reliability tests: an ``mlflow server``, ``mlattack`` subprocesses, a memorising model.

Everything started here is stopped by its own pid (the server in its own session, so its uvicorn child goes with it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MLATTACK = str(BIN / "mlattack")
CONFIGS = ROOT / "configs"


@contextmanager
def keep_tracking_uri() -> Iterator[None]:
    """``log_network``/``load_network`` call ``mlflow.set_tracking_uri``, which also rewrites MLFLOW_TRACKING_URI in
    the process environment; put back what was there."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.05,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> object:
    """Poll ``predicate`` until it is truthy; fail (with the process log) on timeout or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (rc {proc.returncode}) before {what}:\n{tail(log)}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{tail(log)}")


def tail(log: Path | None, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log is not None and log.is_file() else ""


def stop(proc: subprocess.Popen, group: bool = False, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; ``group``: the whole session the process leads."""
    if proc.poll() is not None:
        return
    send = (lambda sig: os.killpg(proc.pid, sig)) if group else proc.send_signal
    try:
        send(signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(grace)
    except ProcessLookupError:
        pass
    if group:  # the uvicorn child may outlive its parent by a moment
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class MlflowServer:
    """``mlflow server`` with a SQLite backend and proxied artifact storage, on 127.0.0.1:<port>."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = root, port or free_port()
        self.db, self.artifacts = root / "server.db", root / "artifacts"
        self.proc: subprocess.Popen | None = None
        self.log = root / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 150.0) -> MlflowServer:
        cmd = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=dict(os.environ, OMP_NUM_THREADS="1"),
            )
        wait_for(
            self._healthy,
            timeout,
            f"mlflow server on port {self.port}",
            interval=0.3,
            proc=self.proc,
            log=self.log,
        )
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, group=True)
            self.proc = None


def cli_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ, MLFLOW_TRACKING_URI=tracking_uri, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra
    )
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(k, None)
    return env


#: ``mlattack`` with this module imported first, so the registry may rebuild the test network class
#: (it builds only mlattack's classes and those of modules already imported)
MLATTACK_WITH_TEST_NETS = [
    sys.executable,
    "-c",
    "import tests.reliability.helpers\nfrom mlattack.cli import main\nmain()",
]


def start_cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``mlattack <args>`` as a real process (its own session, so a kill reaches only it)."""
    with open(log, "w") as f:
        return subprocess.Popen(
            [*MLATTACK_WITH_TEST_NETS, *args],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def jsonl_positions(path: Path) -> list[int]:
    """Positions of the complete lines of a record file (a torn last line is not a record)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(int(json.loads(line)["position"]))
        except (json.JSONDecodeError, KeyError):
            pass
    return out


def tiny_fit_args(out: Path, epochs: int = 1, extra: tuple[str, ...] = ()) -> list[str]:
    """The smallest real ``mlattack fit``: ML-GCN with the tiny trunk, 32 px, 48 images of 6 classes."""
    return [
        "fit",
        "--config",
        str(CONFIGS / "demo.yaml"),
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.enable_progress_bar",
        "false",
        "--data.image_size",
        "32",
        "--data.batch_size",
        "16",
        "--data.num_workers",
        "0",
        "--data.options",
        '{"num_classes": 6, "num_samples": 48}',
        *extra,
    ]


# -- a model that predicts the built-in dataset's test split perfectly, so every sample is selected -----------------
MEMO_SIZE, MEMO_CLASSES, MEMO_SAMPLES = 16, 6, 24
MEMO_DATA = [
    "--data.source",
    "synthetic",
    "--data.image_size",
    str(MEMO_SIZE),
    "--data.num_workers",
    "0",
    "--data.options",
    json.dumps({"num_classes": MEMO_CLASSES, "num_samples": MEMO_SAMPLES}),
]


class MemorisingNet(nn.Module):
    """Flatten + one linear layer: a class the registry can rebuild from ``class_path`` (no pickle)."""

    def __init__(self, in_features: int = 3 * MEMO_SIZE * MEMO_SIZE, num_classes: int = MEMO_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.flatten, self.linear = nn.Flatten(), nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


def memorising_net() -> nn.Module:
    """A linear map fitted exactly (minimum norm, 768 inputs > 24 images) to logits ±4 of the test split's labels.

    Differentiable, so the attacks have real gradients to follow.
    """
    from mlattack.data.synthetic import SyntheticMultiLabel

    ds = SyntheticMultiLabel("test", image_size=MEMO_SIZE, num_classes=MEMO_CLASSES, num_samples=MEMO_SAMPLES)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))]).flatten(1).double()
    xa = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    w = torch.linalg.pinv(xa) @ (8.0 * ds.targets.double() - 4.0)
    net = MemorisingNet(x.shape[1], MEMO_CLASSES)
    with torch.no_grad():
        net.linear.weight.copy_(w[:-1].T.float())
        net.linear.bias.copy_(w[-1].float())
    return net.eval()


#: record fields measured rather than computed (wall time, memory high-water mark, start time): they differ between runs
MEASURED = ("seconds", "peak_mb", "started")


def computed(record: dict) -> dict:
    """A per-sample record without its measured fields: what an interrupted run must reproduce exactly."""
    return {k: v for k, v in record.items() if k not in MEASURED}


def computed_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """An attack run's MLflow metrics without the measured ones (wall time, peak memory)."""
    return {k: v for k, v in metrics.items() if not k.startswith("time/") and k != "cost/peak_memory_mb"}
