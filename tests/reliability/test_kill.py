"""Crash recovery with real ``kill -9`` of ``mlattack`` processes, and two attack processes on one SQLite store.

- ``mlattack fit`` killed mid-epoch (after its first ``last.ckpt``): ``--ckpt_path last.ckpt`` continues in the same
  MLflow run, which the kill left RUNNING and the resume finishes.
- ``mlattack attack`` killed mid-attack: re-running the same command resumes the same parent run from the per-batch
  records; while it runs, a second ``mlattack attack`` (the uninterrupted reference, another experiment and output
  folder) writes to the same SQLite store. Both complete; the resumed table equals the reference exactly.
"""

import json
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import torch
import yaml

from mlattack.tracking.registry import log_network
from tests.reliability.helpers import (
    MEMO_DATA,
    MEMO_SAMPLES,
    MEMO_SIZE,
    MLATTACK,
    ROOT,
    cli_env,
    computed,
    computed_metrics,
    jsonl_positions,
    keep_tracking_uri,
    memorising_net,
    start_cli,
    stop,
    tail,
    tiny_fit_args,
    wait_for,
)

ATTACKS = ("PGD", "MIFGSM")


def loadable_last_checkpoint(out: Path):
    """(path, checkpoint) once ``last.ckpt`` exists and is complete, else None."""
    for path in out.rglob("last.ckpt"):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # still being written
            return None
    return None


def test_fit_killed_mid_epoch_resumes_in_the_same_run(tmp_path, fresh_store):
    store = fresh_store(tmp_path)
    out, log = tmp_path / "out", tmp_path / "fit-killed.log"
    pace = ("--trainer.callbacks+=tests.reliability.pacing.SlowTraining",)
    proc = start_cli(tiny_fit_args(out, epochs=3, extra=pace), cli_env(store), log)
    try:
        last, ckpt = wait_for(
            lambda: loadable_last_checkpoint(out),
            300,
            "the first last.ckpt",
            interval=0.1,
            proc=proc,
            log=log,
        )
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        stop(proc)
    assert ckpt["epoch"] == 0  # killed in epoch 1, with only epoch 0's checkpoint on disk
    client = mlflow.MlflowClient(store)
    run_id = ckpt["mlflow_run_id"]
    assert client.get_run(run_id).info.status == "RUNNING"  # a killed process cannot close its run

    resumed = subprocess.run(
        [MLATTACK, *tiny_fit_args(out, epochs=3, extra=("--ckpt_path", str(last)))],
        cwd=ROOT,
        env=cli_env(store),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    runs = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    history = client.get_metric_history(run_id, "val/mAP")
    steps = [m.step for m in history]
    assert len(history) == 3 and len(set(steps)) == 3  # epochs 0 (before the kill), 1 and 2; none twice
    assert sorted({int(m.value) for m in client.get_metric_history(run_id, "epoch")}) == [0, 1, 2]
    version = client.get_model_version_by_alias("mlgcn-synthetic", "best")
    assert version.run_id == run_id


@pytest.fixture(scope="module")
def attack_crash(tmp_path_factory, store_template):
    """Kill one attack process mid-way, then run its resume and a reference run at the same time."""
    root = tmp_path_factory.mktemp("attack-crash")
    (root / "mlflow.db").write_bytes(store_template.read_bytes())
    store = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("models"))
    with keep_tracking_uri():
        model = log_network(memorising_net(), run.info.run_id, store, "memo-synthetic", image_size=MEMO_SIZE)
    step = {"eps": 0.05, "nb_iter": 30, "eps_iter": 0.005}
    config = root / "attack.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "num_samples": MEMO_SAMPLES,
                "attacks": [
                    {"attack": {"class_path": f"mlattack.attacks.{a}", "init_args": step}} for a in ATTACKS
                ],
            }
        )
    )
    args = [
        "attack",
        "--config",
        str(config),
        "--model",
        model,
        *MEMO_DATA,
        "--data.batch_size",
        "2",
        "--data.eval_batch_size",
        "2",
        "--accelerator",
        "cpu",
        "--panel_samples",
        "0",
    ]
    crashed, reference = (
        [*args, "--output_dir", str(root / "out")],
        [*args, "--output_dir", str(root / "ref"), "--experiment", "reference"],
    )
    env = cli_env(store)

    first = start_cli(crashed, env, root / "killed.log")
    try:
        wait_for(
            lambda: any(jsonl_positions(p) for p in (root / "out").rglob("*.jsonl")),
            300,
            "the first attack records",
            proc=first,
            log=root / "killed.log",
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        stop(first)
    at_kill = {p.stem: jsonl_positions(p) for p in (root / "out").rglob("*.jsonl")}
    parents = client.search_runs(
        [client.get_experiment_by_name("mlattack-attacks").experiment_id],
        filter_string="tags.`mlflow.parentRunId` IS NULL",
    )
    killed = SimpleNamespace(run_id=parents[0].info.run_id, status=parents[0].info.status, count=len(parents))

    procs = {
        "resumed": start_cli(crashed, env, root / "resumed.log"),
        "reference": start_cli(reference, env, root / "reference.log"),
    }
    try:
        rcs = {k: p.wait(400) for k, p in procs.items()}
    finally:
        for p in procs.values():
            stop(p)
    logs = {k: tail(root / f"{k}.log", 20000) for k in procs}
    return SimpleNamespace(root=root, client=client, killed=killed, at_kill=at_kill, rcs=rcs, logs=logs)


def parent_of(s, experiment: str):
    exp = s.client.get_experiment_by_name(experiment)
    runs = s.client.search_runs([exp.experiment_id], filter_string="tags.`mlflow.parentRunId` IS NULL")
    assert len(runs) == 1
    children = s.client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{runs[0].info.run_id}'"
    )
    return runs[0], {c.info.run_name: c for c in children}


def records(folder: Path, attack: str) -> list[dict]:
    (path,) = folder.rglob(f"{attack}.jsonl")
    return [computed(json.loads(line)) for line in path.read_text().splitlines()]


def test_killed_attack_resumes_to_the_identical_table(attack_crash):
    s = attack_crash
    assert s.rcs["resumed"] == 0, s.logs["resumed"]
    assert s.killed.count == 1 and s.killed.status == "RUNNING"  # what kill -9 leaves behind...
    done_at_kill = sum(len(v) for v in s.at_kill.values())
    assert 0 < done_at_kill < len(ATTACKS) * MEMO_SAMPLES  # ...mid-attack
    assert f"Resuming attack run {s.killed.run_id}" in s.logs["resumed"]
    parent, children = parent_of(s, "mlattack-attacks")
    assert (
        parent.info.run_id == s.killed.run_id and parent.info.status == "FINISHED"
    )  # ...and the resume closes
    ref_parent, ref_children = parent_of(s, "reference")
    for attack in ATTACKS:
        raw = jsonl_positions(next((s.root / "out").rglob(f"{attack}.jsonl")))
        assert sorted(raw) == list(range(MEMO_SAMPLES))  # every sample once: none lost, none counted twice
        assert records(s.root / "out", attack) == records(s.root / "ref", attack)
        got, want = children[attack].data.metrics, ref_children[attack].data.metrics
        assert computed_metrics(got) == computed_metrics(want)
    table = [
        mlflow.artifacts.load_text(f"{r.info.artifact_uri}/success_table.md") for r in (parent, ref_parent)
    ]
    assert table[0] == table[1]


def test_two_attack_processes_on_one_sqlite_store_both_complete(attack_crash):
    s = attack_crash
    assert s.rcs == {"resumed": 0, "reference": 0}, s.logs
    for log in s.logs.values():
        assert "database is locked" not in log
    for experiment in ("mlattack-attacks", "reference"):
        parent, children = parent_of(s, experiment)
        assert parent.info.status == "FINISHED" and "avg_labels" in parent.data.metrics
        assert sorted(children) == sorted(ATTACKS)
        for child in children.values():
            assert child.info.status == "FINISHED"
            assert child.data.metrics["num_samples"] == MEMO_SAMPLES
            assert all(f"success/n{k}" in child.data.metrics for k in range(8))
            history = s.client.get_metric_history(child.info.run_id, "curve/success_vs_n")
            assert sorted(m.step for m in history) == list(range(8))
            assert "samples.csv" in [a.path for a in s.client.list_artifacts(child.info.run_id)]
