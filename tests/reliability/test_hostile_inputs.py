"""Hostile and broken inputs not covered elsewhere (see README.md here for the full table with the other tests)."""

import os
import pickle
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from mlattack.cli import main
from mlattack.tracking.registry import load_network
from tests.reliability.helpers import CONFIGS, tiny_fit_args


class Payload:
    """Unpickling this would call ``open(marker, "w")``: the file appears if the loader runs pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def store(tmp_path, fresh_store, monkeypatch):
    uri = fresh_store(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def experiments(store: str) -> list[str]:
    return [e.name for e in mlflow.MlflowClient(store).search_experiments()]


@pytest.fixture
def raising(monkeypatch):
    """``mlattack`` re-raises expected errors instead of printing one line (what these tests inspect)."""
    monkeypatch.setenv("MLATTACK_DEBUG", "1")


def test_checkpoint_with_a_pickle_payload_is_refused_and_nothing_runs(tmp_path, store, raising):
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "PWNED"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": Payload(marker)}, evil)
    assert (
        pickle.loads(pickle.dumps(Payload(tmp_path / "probe"))) and (tmp_path / "probe").exists()
    )  # it is live
    with pytest.raises(
        ValueError, match=f"checkpoint {evil}: refused.*weights_only=True.*Unsupported global"
    ):
        load_network(str(evil))
    # resuming a fit from it is refused the same way (it is read with weights_only=True)
    with pytest.raises((pickle.UnpicklingError, ValueError), match="refused|Unsupported global"):
        main(tiny_fit_args(tmp_path / "out", extra=("--ckpt_path", str(evil))))
    assert not marker.exists()


def test_config_with_a_typo_key_exits_2_naming_it_and_writes_nothing(tmp_path, store, capsys):
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump({"trainer": {"max_epoch": 1}}))
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "demo.yaml"),
                "--config",
                str(bad),
                "--trainer.default_root_dir",
                str(tmp_path / "out"),
            ]
        )
    assert exit_.value.code == 2
    assert "does not accept option 'trainer.max_epoch'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and "mlattack" not in experiments(store)


@pytest.mark.parametrize(
    ("attacks", "num_samples", "message"),
    [
        (
            [{"config": "configs/attack/pgd.yaml", "overrides": {"eps": -0.1}}],
            10,
            r"pgd\.yaml: invalid attack config: eps must be a finite number > 0, got -0\.1",
        ),
        (
            [{"config": "configs/attack/fgsm.yaml", "overrides": {"eps": float("nan")}}],
            10,
            r"fgsm\.yaml: invalid attack config: eps must be a finite number > 0, got nan",
        ),
        (
            [{"attack": {"class_path": "mlattack.attacks.FGSM", "init_args": {"eps": float("nan")}}}],
            10,
            r"eps must be a finite number > 0, got nan",
        ),
        ([{"config": "configs/attack/fgsm.yaml"}], 0, r"num_samples must be > 0, got 0"),
        (
            [{"config": "configs/attack/fgsm.yaml", "num_samples": -5}],
            10,
            r"attacks\[None\]\.num_samples must be > 0, got -5",
        ),
    ],
    ids=["eps<0", "eps-nan-file", "eps-nan-inline", "N=0", "attack-N<0"],
)
def test_bad_attack_budgets_and_sample_counts_are_refused_before_any_run(
    tmp_path, store, raising, attacks, num_samples, message
):
    cfg = tmp_path / "attack.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"num_samples": num_samples, "data": str(CONFIGS / "data" / "synthetic.yaml"), "attacks": attacks}
        )
    )
    with pytest.raises(ValueError, match=message):
        main(
            [
                "attack",
                "--config",
                str(cfg),
                "--model",
                "models:/mlgcn-synthetic@best",
                "--output_dir",
                str(tmp_path / "out"),
            ]
        )
    assert not (tmp_path / "out").exists() and "mlattack-attacks" not in experiments(store)
    assert os.environ["MLFLOW_TRACKING_URI"] == store
