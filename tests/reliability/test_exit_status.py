"""The exit-status contract (README, ``mlattack --help``): 0 success; 2 a mistake in the input or the environment,
in one line; 130 / 143 interrupted (Ctrl-C / SIGTERM); 1 a bug, with its traceback. Each case of issue 24's
hostile matrix that ended otherwise, through the real ``mlattack`` entry point."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mlattack.cli import main

ATTACKS = json.dumps([{"attack": {"class_path": "mlattack.attacks.FGSM", "init_args": {"eps": 0.3}}}])


def attack_args(model: str, out: Path, *extra: str) -> list[str]:
    return ["attack", "--model", model, "--data.source", "toy", "--data.image_size", "8", "--data.num_workers", "0",
            "--attacks", ATTACKS, "--num_samples", "6", "--batch_size", "3", "--accelerator", "cpu",
            "--output_dir", str(out), *extra]  # fmt: skip


def exit_of(args: list[str], capsys) -> tuple[int, str]:
    """``mlattack <args>`` in this process: its exit status and what it printed to stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    code = exit_.value.code
    return (0 if code is None else code), capsys.readouterr().err


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
