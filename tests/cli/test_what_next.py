"""Errors that say what to do next (a newcomer's first hour, issue 26), and `test --ckpt_path models:/...` with
nothing else: the registered network brings its class, settings and data from the fit that registered it."""

import re

import pytest

from mlattack.resources import config_dir
from tests.cli.test_errors import ONE_LINE
from tests.data.fixtures import make_voc

CONFIGS = config_dir()
TINY = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
        "--data.image_size", "16", "--data.batch_size", "16", "--data.num_workers", "0",
        "--data.options", '{"num_classes": 4, "num_samples": 32}']  # fmt: skip


def one_line_error(mlattack, *argv) -> str:
    code, out, err = mlattack(*argv)
    assert code == 2, err
    assert "Traceback" not in err + out and ONE_LINE.fullmatch(err), err
    return err


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["atack"], r"invalid choice: 'atack'.*\n  hint: did you mean attack\?"),
        (["data", "stat"], r"invalid choice: 'stat'.*\n  hint: did you mean stats\?"),
        (["fit", "--config", "configs/demo.yml"], r"demo\.yml'\n  hint: did you mean configs/demo\.yaml\?"),
        (
            ["fit", "--config", "configs/attack/pdg.yaml"],
            r"\n  hint: did you mean configs/attack/pgd\.yaml\?",
        ),
        (
            ["--config", "configs/demo.yaml", "fit", "--trainer.max_epochs", "1"],
            r"error: --config configs/demo\.yaml: options go after the subcommand, not before 'fit'\n"
            r"  hint: mlattack fit --config configs/demo\.yaml --trainer\.max_epochs 1\n",
        ),
    ],
)
def test_a_typo_gets_did_you_mean_and_misplaced_options_are_named_as_typed(mlattack, here, argv, expected):
    err = one_line_error(mlattack, *argv)
    assert re.search(expected, err), err
    assert "model.net" not in err  # nothing the user did not type


def test_accelerator_without_the_device_names_the_option_and_suggests_cpu(mlattack, here):
    argv = ["fit", "--config", "configs/demo.yaml", *TINY, "--trainer.accelerator", "gpu"]
    err = one_line_error(mlattack, *argv)
    assert re.search(
        r"error: --trainer\.accelerator: gpu: .*\n  hint: .*--trainer\.accelerator cpu, or auto", err
    )


def test_a_missing_registered_model_names_the_store_and_mlattack_fit(mlattack, here, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    err = one_line_error(mlattack, "test", "--ckpt_path", "models:/nope@best")
    store = f"sqlite:///{here / 'mlruns' / 'mlflow.db'}"
    assert f"there is no tracking store at {store}" in err and "train one with `mlattack fit`" in err
    assert not (here / "mlruns").exists()  # looking did not create one


def test_voc_with_empty_jpegimages_is_one_line_exit_2(mlattack, here):
    root = make_voc(here / "voc", year="2012")
    for jpg in (root / "VOCdevkit/VOC2012/JPEGImages").iterdir():
        jpg.unlink()
    err = one_line_error(
        mlattack, "data", "stats", "--data", "configs/data/voc2012.yaml", "--data.root", root
    )
    assert re.search(r"data\.root: images missing: .*JPEGImages has none of the \d+ images", err), err


def test_test_and_predict_take_a_registered_network_alone(mlattack, here):
    code, out, err = mlattack("fit", "--config", "configs/demo.yaml", *TINY)
    assert code == 0, err
    uri = re.search(r"best by val mAP: (models:/\S+@best)", out).group(1)
    code, out, err = mlattack("test", "--ckpt_path", uri, "--trainer.enable_progress_bar", "false")
    assert code == 0, err
    assert re.search(r"test/mAP", out)
    code, out, err = mlattack("predict", f"--ckpt_path={uri}", "--trainer.enable_progress_bar", "false")
    assert code == 0, err
    # what the user types still wins over the fit's settings: a data option of another shape is refused
    err = one_line_error(mlattack, "validate", "--ckpt_path", uri, "--data.image_size", "-1")
    assert "data.image_size must be > 0" in err
    err = one_line_error(mlattack, "test", "--ckpt_path", "models:/nope@best")
    assert re.search(r"models:/nope@best: no such registered model .* tracking store sqlite:///", err), err


def test_the_demos_mlflow_ui_hint_runs_without_an_activated_venv(tmp_path):
    """The printed command must work from a shell whose PATH lacks the venv's bin/ (`mlflow: command not found`)."""
    import shlex
    import subprocess

    from mlattack.tracking.store import mlflow_ui_command

    command = shlex.split(mlflow_ui_command(f"sqlite:///{tmp_path}/mlflow.db"))
    assert command[-3:] == ["ui", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    program = command[:-3]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([*program, "ui", "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and "--backend-store-uri" in done.stdout, done.stderr
