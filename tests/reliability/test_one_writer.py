"""One writer per run: a second command on a live run stops with a message naming the writer (same output folder:
the lock file; another folder on the same store: the run's writer tag); the lock of a ``kill -9``-ed writer is
taken over; two first commands on a new SQLite store both succeed."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import mlflow
import pytest

from mlattack.rundir.lock import RunBusy, RunLock
from mlattack.rundir.records import read_records
from tests.reliability import forked
from tests.reliability.jobs import ATTACKS, attack_job, run_toy_attack


def lock_holder(out):
    locks = list(out.glob("*/writer.lock"))
    return RunLock(locks[0]).read() if locks else None


def test_a_second_command_on_a_live_run_stops_naming_it_and_a_killed_writer_is_taken_over(
    tmp_path, store, toy_source, registered_toy_model
):
    out, release = tmp_path / "out", tmp_path / "release"
    child = forked.start(attack_job, store, registered_toy_model, str(out), None, 0.0, None, str(release))
    try:
        holder = forked.wait_until(lambda: lock_holder(out), child, 300, "the first command to hold its run")
        assert holder["pid"] == child.pid
        forked.wait_until(lambda: any(out.glob("*/*.jsonl")), child, 300, "its first records")
        with pytest.raises(RunBusy, match=rf"being written by PID {child.pid} on {socket.gethostname()}"):
            run_toy_attack(registered_toy_model, out)  # the same command again
        with pytest.raises(RunBusy, match=rf"attack run \w+ is being written by PID {child.pid}"):
            run_toy_attack(registered_toy_model, tmp_path / "elsewhere")  # same run, another output folder
        assert not any((tmp_path / "elsewhere").glob("*/*.jsonl"))
        os.kill(child.pid, signal.SIGKILL)  # the writer dies holding its lock
        child.join(30)
    finally:
        release.touch()
        if child.is_alive():
            child.kill()
    resumed = run_toy_attack(registered_toy_model, out)  # takes the lock over and finishes the run
    assert resumed.resumed
    client = mlflow.MlflowClient(store)
    parents = client.search_runs([client.get_experiment_by_name("mlattack-attacks").experiment_id],
                                 filter_string="tags.`mlflow.parentRunId` IS NULL")  # fmt: skip
    assert [r.info.run_id for r in parents] == [resumed.parent_run_id] and parents[
        0
    ].info.status == "FINISHED"
    for name, _ in ATTACKS:
        (records_file,) = out.glob(f"*/{name}.jsonl")
        positions = [r["position"] for r in read_records(records_file)[0]]
        assert sorted(positions) == list(range(resumed.num_selected))  # every sample once: no work twice
        history = client.get_metric_history(resumed.child_run_ids[name], "curve/success_vs_n")
        assert sorted(m.step for m in history) == list(range(8))  # every success point once
    assert RunLock(next(out.glob("*/writer.lock"))).read() is None  # released


def test_run_lock_names_a_live_holder_and_takes_over_a_dead_or_silent_one(tmp_path):
    path = tmp_path / "run" / "writer.lock"
    with RunLock(path, what="run X"):
        holder = RunLock(path).read()
        assert holder["pid"] == os.getpid() and holder["heartbeat"] <= time.time()
        with pytest.raises(
            RunBusy, match=rf"run X is being written by PID {os.getpid()} on .*last heartbeat"
        ):
            RunLock(path, what="run X").acquire()  # another open of the file is another holder to flock
    # without flock (some network file systems) the record decides: a dead PID or a silent remote host is stale
    lock = RunLock(path, stale_after=60)
    here = socket.gethostname()
    assert lock._stale({"pid": 2**22 + 12345, "host": here, "heartbeat": time.time()})
    assert lock._stale({"pid": 1, "host": "elsewhere", "heartbeat": time.time() - 600})
    assert not lock._stale({"pid": 1, "host": "elsewhere", "heartbeat": time.time()})
    assert lock._stale(None)
    path.write_bytes(b"\xff torn {")  # a record torn by a kill: unreadable, not an obstacle
    assert RunLock(path).read() is None
    with RunLock(path):
        pass


def _first_command(uri: str, start_at: float, log: str) -> None:
    """A fresh process's first use of a store: create it (migrations), then log a run."""
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from mlattack.tracking.store import default_tracking_uri

    time.sleep(max(0.0, start_at - time.time()))
    try:
        client = mlflow.MlflowClient(default_tracking_uri())
        run = client.create_run("0")
        client.log_metric(run.info.run_id, "x", 1.0)
        client.set_terminated(run.info.run_id)
        result = "ok"
    except Exception as e:  # noqa: BLE001 - reported to the test
        result = f"{type(e).__name__}: {e}"
    with open(log, "a") as f:
        f.write(json.dumps(result) + "\n")


def test_first_commands_started_together_on_a_new_sqlite_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    log = tmp_path / "results.jsonl"
    start_at = time.time() + 3.0
    children = [forked.start(_first_command, uri, start_at, str(log)) for _ in range(3)]
    assert [forked.finish(c, 300) for c in children] == [0, 0, 0]
    assert [json.loads(line) for line in log.read_text().splitlines()] == ["ok", "ok", "ok"]
    client = mlflow.MlflowClient(uri)
    assert len(client.search_runs(["0"])) == 3


def test_a_second_resume_of_a_live_fit_stops_before_it_touches_the_run(tmp_path, fresh_store):
    """Two `mlattack fit --ckpt_path last.ckpt` at once: the second exits 2 with one line naming the first, and
    the first's MLflow run is not marked FAILED by it; the first finishes its epochs once each."""
    from tests.reliability.jobs import cli_job, fit_args
    from tests.reliability.test_random_kills import last_checkpoint

    store, out = fresh_store(tmp_path / "store"), tmp_path / "out"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    assert forked.finish(forked.start(cli_job, store, fit_args(out, 1), str(first_log)), 600) == 0
    ckpt = last_checkpoint(out, 0)
    resume = fit_args(out, 3, ("--ckpt_path", str(ckpt)))
    first = forked.start(cli_job, store, resume, str(first_log), 1.0)  # paced: a second per training batch
    try:
        lock = ckpt.parent / "writer.lock"
        forked.wait_until(
            lambda: (RunLock(lock).read() or {}).get("pid") == first.pid, first, 300, "its lock"
        )
        second = forked.start(cli_job, store, resume, str(second_log))
        assert forked.finish(second, 300) == 2, second_log.read_text()
        said = second_log.read_text()
        assert f"is being written by PID {first.pid}" in said and "Traceback" not in said
        client = mlflow.MlflowClient(store)
        (run,) = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
        assert run.info.status == "RUNNING"  # the loser left the live run alone
        assert forked.finish(first, 600) == 0, first_log.read_text()
    finally:
        if first.is_alive():
            first.kill()
    (run,) = client.search_runs([run.info.experiment_id])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/mAP")]
    assert sorted(steps) == sorted(set(steps)) and len(steps) == 3  # each epoch logged once
    assert RunLock(ckpt.parent / "writer.lock").read() is None  # released
