"""Settings that used to run silently wrong: an unknown or unsupported precision, sweep values that skipped the
attack's own checks."""

from __future__ import annotations

import math

import mlflow
import pytest
import yaml

from mlattack.attacks import FGSM, PGD
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.evaluation.settings import AttackSettings, apply_mode
from mlattack.evaluation.specs import rebuild_attack
from tests.reliability.helpers import CONFIGS


@pytest.mark.parametrize(
    ("precision", "message"),
    [
        (
            "foo",
            r"precision must be one of \['32-true', '32', '16-mixed', 'bf16-mixed', '16', 'bf16'\], got 'foo'",
        ),
        ("bf16-true", r"got 'bf16-true' \(half-precision weights would change the attacked network itself"),
        ("16-true", r"got '16-true' \(half-precision weights"),
        ("64-true", r"got '64-true'"),
    ],
)
def test_an_unsupported_precision_is_refused_before_anything_runs(tmp_path, store, precision, message):
    with pytest.raises(ValueError, match=message):
        run_attacks("models:/none@best", None, [AttackSpec(attack=FGSM())], precision=precision,
                    output_dir=str(tmp_path / "out"))  # fmt: skip
    assert not (tmp_path / "out").exists()
    assert mlflow.MlflowClient(store).get_experiment_by_name("mlattack-attacks") is None


def test_the_command_line_refuses_an_unknown_precision_by_its_type(tmp_path, store, capsys):
    from mlattack.cli import main

    cfg = tmp_path / "attack.yaml"
    cfg.write_text(yaml.safe_dump({"data": str(CONFIGS / "data" / "synthetic.yaml"),
                                   "attacks": [{"config": "configs/attack/fgsm.yaml"}]}))  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(["attack", "--config", str(cfg), "--model", "models:/x@best", "--precision", "foo",
              "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert exit_.value.code == 2 and "precision" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_supported_precisions_set_the_attacks_autocast():
    assert apply_mode(FGSM(), False, "bf16-mixed").autocast == "bf16"
    assert apply_mode(FGSM(), False, "16-mixed").autocast == "fp16"
    assert apply_mode(FGSM(), False, "32-true").autocast is None
    assert AttackSettings(precision="bf16-mixed").precision == "bf16-mixed"


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"eps": [-0.05]}, r"sweep\.eps=-0\.05 for PGD: eps must be a finite number > 0, got -0\.05"),
        ({"eps": [0.1, math.nan]}, r"sweep\.eps=nan for PGD: eps must be a finite number > 0, got nan"),
        ({"nb_iter": [0]}, r"sweep\.nb_iter=0 for PGD: nb_iter"),
        ({"nb_iter": [-3]}, r"sweep\.nb_iter=-3 for PGD: nb_iter"),
        ({"epsilon": [0.1]}, r"sweep\.epsilon=0\.1 for PGD: PGD has no argument 'epsilon'"),
        ({"eps": []}, r"sweep\.eps: give a list of at least one value"),
    ],
    ids=["eps<0", "eps-nan", "nb_iter=0", "nb_iter<0", "unknown", "empty"],
)
def test_sweep_values_go_through_the_attacks_constructor(sweep, message):
    with pytest.raises(ValueError, match=message):
        AttackSpec(attack=PGD(eps=0.1, nb_iter=5, eps_iter=0.02), sweep=sweep).build()


def test_a_sweep_changes_one_argument_and_keeps_the_others():
    base = PGD(eps=0.1, nb_iter=5, eps_iter=0.02, rand_init=False)
    built = AttackSpec(attack=base, sweep={"nb_iter": [2, 7]}).build()
    assert [name for name, _, _ in built] == ["PGD[nb_iter=2]", "PGD[nb_iter=7]"]
    for (_, attack, _), n in zip(built, (2, 7), strict=True):
        assert attack is not base and attack.hyperparameters() == {**base.hyperparameters(), "nb_iter": n}
    assert rebuild_attack(base).hyperparameters() == base.hyperparameters()
