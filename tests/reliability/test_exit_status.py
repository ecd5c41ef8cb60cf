"""The exit-status contract (README, ``mlattack --help``): 0 success; 2 a mistake in the input or the environment,
in one line; 130 / 143 interrupted (Ctrl-C / SIGTERM); 1 a bug, with its traceback. Each case of issue 24's
hostile matrix that ended otherwise, through the real ``mlattack`` entry point."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from mlattack.cli import main
from tests.reliability import forked
from tests.reliability.jobs import cli_job

ATTACKS = json.dumps([{"attack": {"class_path": "mlattack.attacks.FGSM", "init_args": {"eps": 0.3}}}])


def attack_args(model: str, out: Path, *extra: str) -> list[str]:
    return ["attack", "--model", model, "--data.source", "toy", "--data.image_size", "8", "--data.num_workers", "0",
            "--attacks", ATTACKS, "--num_samples", "6", "--batch_size", "3", "--accelerator", "cpu",
            "--output_dir", str(out), *extra]  # fmt: skip


def exit_of(args: list[str], capsys) -> tuple[int, str]:
    """``mlattack <args>`` in this process: its exit status and what it printed to stderr."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("mlattack:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@contextlib.contextmanager
def mounted(folder: Path, options: str):
    """A tmpfs at ``folder`` (a real read-only or full file system); skipped where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_read_only_output_dir_is_one_line(tmp_path, store, toy_source, registered_toy_model, capsys):
    with mounted(tmp_path / "ro", "ro,size=1m") as ro:
        code, err = exit_of(attack_args(registered_toy_model, ro / "out"), capsys)
    assert code == 2, err
    print(one_line(err))


def test_a_full_disk_is_one_line_saying_the_work_is_kept_and_the_rerun_finishes(
    tmp_path, store, toy_source, registered_toy_model, capsys
):
    with mounted(tmp_path / "small", "size=256k") as small:
        filler = small / "filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\1" * 4096)
        os.truncate(filler, filler.stat().st_size - 4 * 4096)  # leave 16 KiB: the run starts, then fills it
        args = attack_args(registered_toy_model, small / "out")
        code, err = exit_of(args, capsys)
        assert code == 2, err
        line = one_line(err)
        assert "no space left on the device" in line and "the work so far is kept" in line
        assert line.startswith(f"mlattack: error: {small / 'out'}"), line  # the folder whose disk is full
        assert "re-run the same command to resume" in err
        filler.unlink()
        assert exit_of(args, capsys)[0] == 0


def test_read_only_store_folder_is_one_line_naming_it(tmp_path, fresh_store, monkeypatch, capsys):
    with mounted(tmp_path / "ro", "size=1m") as folder:
        uri = fresh_store(folder)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        code, err = exit_of(["report", "--output_dir", str(tmp_path / "report")], capsys)
    assert code == 2, err
    assert str(folder) in one_line(err)


def test_a_second_writer_is_one_line_runbusy_exit_2(
    tmp_path, store, toy_source, registered_toy_model, capsys
):
    from mlattack.rundir.lock import RunLock

    args = attack_args(registered_toy_model, tmp_path / "out")
    assert exit_of(args, capsys)[0] == 0
    (lock_file,) = (tmp_path / "out").glob("*/writer.lock")
    held = RunLock(lock_file).acquire()  # another writer holds the run
    try:
        code, err = exit_of(args, capsys)
    finally:
        held.release()
    assert code == 2 and "is being written by PID" in one_line(err)


def test_a_yaml_alias_loop_is_one_line(tmp_path, store, toy_source, registered_toy_model, capsys):
    config = tmp_path / "loop.yaml"
    config.write_text(
        "attacks:\n  - config: configs/attack/fgsm.yaml\n    overrides: &o {eps: 0.1, me: *o}\n"
    )
    code, err = exit_of(attack_args(registered_toy_model, tmp_path / "out", "--config", str(config)), capsys)
    assert code == 2 and "a YAML alias refers to itself" in one_line(err) and str(config) in err


@pytest.mark.parametrize("where", ["attack file", "inline", "config"])
def test_a_class_path_outside_mlattack_is_refused_before_its_module_is_imported(
    tmp_path, store, toy_source, registered_toy_model, capsys, where
):
    evil = tmp_path / "evil_attack_module.py"
    marker = tmp_path / "IMPORTED"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\nclass Zen:\n    pass\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(tmp_path))
        spec = {"class_path": "evil_attack_module.Zen", "init_args": {}}
        attack_file = tmp_path / "zen.yaml"
        attack_file.write_text(json.dumps(spec))
        attacks = {"attack file": [{"config": str(attack_file)}], "inline": [{"attack": spec}]}.get(where)
        args = attack_args(registered_toy_model, tmp_path / "out")
        if attacks is not None:
            args[args.index("--attacks") + 1] = json.dumps(attacks)
        else:
            config = tmp_path / "attack.yaml"
            config.write_text(json.dumps({"attacks": [{"attack": spec}]}))
            args += ["--config", str(config)]
        code, err = exit_of(args, capsys)
    assert code == 2 and "is not from mlattack, torch or Lightning; refusing to import it" in one_line(err)
    assert not marker.exists()  # its top-level code never ran


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_attack_exits_128_plus_the_signal_and_the_same_command_resumes(
    tmp_path, store, toy_source, registered_toy_model, signum, status
):
    from mlattack.rundir.records import read_records

    slow = json.dumps([{"attack": {"class_path": "mlattack.attacks.BIM",
                                   "init_args": {"eps": 0.2, "nb_iter": 3000, "eps_iter": 0.0005}}}])  # fmt: skip
    args = attack_args(registered_toy_model, tmp_path / "out", "--batch_size", "1")
    args[args.index("--attacks") + 1] = slow
    log = tmp_path / "stderr.log"
    child = forked.start(cli_job, store, args, str(log))
    forked.wait_until(lambda: any((tmp_path / "out").glob("*/BIM.jsonl")), child, 300, "its first record")
    os.kill(child.pid, signum)
    assert forked.finish(child, 120) == status, log.read_text()
    assert "mlattack: interrupted; re-run the same command to resume" in log.read_text()
    assert "Traceback" not in log.read_text()
    client = mlflow.MlflowClient(store)
    (parent,) = client.search_runs([client.get_experiment_by_name("mlattack-attacks").experiment_id],
                                   filter_string="tags.`mlflow.parentRunId` IS NULL")  # fmt: skip
    assert parent.info.status == "KILLED"  # interrupted, not broken
    again = forked.start(cli_job, store, args, str(log))
    assert forked.finish(again, 300) == 0, log.read_text()
    (records,) = (tmp_path / "out").glob("*/BIM.jsonl")
    positions = sorted(r["position"] for r in read_records(records)[0])
    assert positions == list(range(len(positions))) and len(positions) == 6  # every sample once
    (parent,) = client.search_runs([client.get_experiment_by_name("mlattack-attacks").experiment_id],
                                   filter_string="tags.`mlflow.parentRunId` IS NULL")  # fmt: skip
    assert parent.info.status == "FINISHED"


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_fit_exits_128_plus_the_signal_is_killed_and_resumes_to_the_uninterrupted_fit(
    tmp_path, fresh_store, signum, status
):
    from mlattack.tracking.registry import DIGEST_TAG
    from tests.reliability.jobs import fit_args, fit_job
    from tests.reliability.test_random_kills import last_checkpoint

    # seconds per training batch (three an epoch): the signal, sent once epoch 0 is saved, lands in the next two
    # epochs' training even when this process notices the checkpoint seconds late on a loaded machine
    epochs, pause = 3, 1.0
    ref_store, store = fresh_store(tmp_path / "ref-store"), fresh_store(tmp_path / "store")
    assert forked.finish(forked.start(fit_job, ref_store, fit_args(tmp_path / "ref", epochs)), 600) == 0
    out, log = tmp_path / "out", tmp_path / "stderr.log"
    child = forked.start(cli_job, store, fit_args(out, epochs), str(log), pause)
    forked.wait_until(lambda: last_checkpoint(out, 0), child, 600, "epoch 0 saved")
    os.kill(child.pid, signum)
    assert forked.finish(child, 120) == status, log.read_text()
    assert "mlattack: interrupted; re-run the same command with --ckpt_path" in log.read_text()
    assert "Traceback" not in log.read_text()
    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mlattack").experiment_id])
    assert run.info.status == "KILLED" and not client.search_model_versions("name = 'mlgcn-synthetic'")
    resume = ("--ckpt_path", str(last_checkpoint(out, 0)))
    assert forked.finish(forked.start(cli_job, store, fit_args(out, epochs, resume), str(log)), 600) == 0, (
        log.read_text()
    )
    (again,) = client.search_runs([run.info.experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    history = sorted(client.get_metric_history(run.info.run_id, "val/mAP"), key=lambda m: m.step)
    ref = mlflow.MlflowClient(ref_store)
    ref_best = ref.get_model_version_by_alias("mlgcn-synthetic", "best")
    ref_history = sorted(ref.get_metric_history(ref_best.run_id, "val/mAP"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(m.step, m.value) for m in ref_history]  # each epoch once
    (version,) = client.search_model_versions("name = 'mlgcn-synthetic'")
    assert version.tags[DIGEST_TAG] == ref_best.tags[DIGEST_TAG]  # the uninterrupted fit's weights


def test_sigterm_inside_a_tracking_store_write_waits_for_it(monkeypatch):
    """SIGTERM raised inside SQLAlchemy/SQLite left SQLite's write lock with a half-done transaction, and the KILLED
    status then failed with "database is locked" (seen once under load). Inside a store write the handler sends the
    signal again 50 ms later instead of raising; anywhere else it raises Terminated at once."""
    from mlattack import errors

    resent = []
    monkeypatch.setattr(errors.os, "kill", lambda pid, sig: resent.append((pid, sig)))
    monkeypatch.setattr(errors, "_deferrals", 0)
    store_code = {"__name__": "sqlalchemy.engine.base", "sys": sys}
    exec("def execute(handler):\n    handler(15, sys._getframe())\n", store_code)
    with monkeypatch.context() as m:
        m.setattr(errors.signal, "signal", lambda *a: None)
        store_code["execute"](errors._on_sigterm)  # no exception inside the write
        time.sleep(0.3)
        assert resent == [(os.getpid(), signal.SIGTERM)]
        with pytest.raises(errors.Terminated):
            errors._on_sigterm(15, sys._getframe())  # outside it: stop now
        monkeypatch.setattr(errors, "_deferrals", errors._MAX_DEFERRALS)
        with pytest.raises(errors.Terminated):  # a write that never ends does not hold SIGTERM forever
            store_code["execute"](errors._on_sigterm)
