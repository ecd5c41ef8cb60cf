"""Checkpoint errors that say what the file is and what was expected (random, empty, truncated, missing, a folder,
not a Lightning checkpoint, weights that do not make the network), and ``fit --ckpt_path`` from another store."""

from __future__ import annotations

import os

import mlflow
import pytest
import torch

from mlattack.tracking.callbacks import RUN_ID_KEY, resume_run_id
from mlattack.tracking.checkpoints import CheckpointError, read_checkpoint
from mlattack.tracking.registry import load_network


@pytest.fixture
def lightning_ckpt(tmp_path):
    """A file with a Lightning checkpoint's layout (state_dict, hyper_parameters, the MLflow run id)."""
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"net.linear.weight": torch.zeros(5, 3)}, "hyper_parameters": {}, "epoch": 2,
                RUN_ID_KEY: "f" * 32}, path)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: p.write_bytes(os.urandom(4096)),
            r"not a PyTorch checkpoint \(4096 bytes starting b['\"]",
        ),  # repr quotes b"..." when a ' is among them
        (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\), e\.g\. a save cut short by a crash"),
        (
            lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
            r"truncated or corrupt \(\d+ bytes\)",
        ),
        (lambda p: p.write_bytes(p.read_bytes()[:101]), r"truncated or corrupt \(101 bytes\)"),
        (
            lambda p: torch.save({"weights": torch.zeros(2)}, p),
            r"a PyTorch file, but not a Lightning checkpoint \(no 'state_dict'",
        ),
        (
            lambda p: torch.save(torch.zeros(2), p),
            r"a PyTorch file, but not a Lightning checkpoint \(no 'state_dict'; found Tensor",
        ),
    ],
    ids=["random-bytes", "0-byte", "truncated-half", "truncated-101", "plain-dict", "plain-tensor"],
)
def test_a_bad_checkpoint_file_is_named_with_what_it_is_and_what_was_expected(lightning_ckpt, make, message):
    make(lightning_ckpt)
    expected = rf"checkpoint {lightning_ckpt}: {message}.*expected a checkpoint written by `mlattack fit`"
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(lightning_ckpt)
    with pytest.raises(CheckpointError, match=expected):
        load_network(str(lightning_ckpt))
    with pytest.raises(CheckpointError, match=expected):
        resume_run_id(lightning_ckpt, "sqlite:///unused.db")


def test_missing_files_folders_and_weights_that_do_not_make_a_network(tmp_path, lightning_ckpt):
    with pytest.raises(
        FileNotFoundError, match=r"checkpoint .*nope\.ckpt: no such file; expected a checkpoint"
    ):
        read_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match=r"nope\.ckpt.*no checkpoint file there"):
        load_network(str(tmp_path / "nope.ckpt"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        resume_run_id(tmp_path / "nope.ckpt", "sqlite:///unused.db")  # before any run exists
    with pytest.raises(CheckpointError, match="a folder"):
        read_checkpoint(tmp_path)
    with pytest.raises(
        CheckpointError, match="a Lightning checkpoint, but its hyper_parameters and weights do not"
    ):
        load_network(str(lightning_ckpt))


def test_fit_resume_from_a_checkpoint_of_another_store_names_run_and_store(tmp_path, store, lightning_ckpt):
    with pytest.raises(CheckpointError, match=rf"written by MLflow run {'f' * 32}, which tracking store {store} does "
                                              r"not hold \(a checkpoint from another store"):  # fmt: skip
        resume_run_id(lightning_ckpt, store)
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("mlattack"))
    ckpt = torch.load(lightning_ckpt, weights_only=True)
    torch.save({**ckpt, RUN_ID_KEY: run.info.run_id}, lightning_ckpt)
    assert resume_run_id(lightning_ckpt, store) == run.info.run_id  # this store's: resumed into that run
    assert resume_run_id("last", store) is None  # Lightning's own names are Lightning's business
