"""``mlattack study`` end to end on a toy source: two victims fitted for one epoch, registered, attacked with FGSM
on a few samples; a second run finds every fit and attack run finished and redoes none. (The report stage is
``mlattack report``, tested in tests/report; it is switched off here to keep the test short.)"""

from __future__ import annotations

import mlflow
import pytest
import torch
import yaml

from mlattack.cli import run
from mlattack.data.datamodule import SOURCES
from mlattack.study import ATTACK_KEY_TAG, FIT_KEY_TAG
from mlattack.tracking.record import ATTACK_NAME_TAG
from tests.evaluation.toy import C, LinearColourNet


class ToyVictim(LinearColourNet):
    """The toy source's exact linear model, with the arguments ``mlattack fit`` links from the data."""

    def __init__(self, num_classes: int = C, dataset: str | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes


class ToyWrong(ToyVictim):
    """Every label flipped: no test sample is predicted right, so the study has nothing to attack."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -super().forward(x)


@pytest.fixture
def study_files(tmp_path, monkeypatch):
    monkeypatch.setitem(SOURCES, "toy", ("tests.evaluation.toy", "ToyColours", False))
    torch.set_num_threads(1)
    data = {"source": "toy", "image_size": 8, "batch_size": 8, "num_workers": 0}
    fit = {  # lr 0: the network stays the toy data's oracle, so the attack has samples to select
        "seed_everything": 1,
        "trainer": {"max_epochs": 3, "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"net": {"class_path": "tests.test_study.ToyVictim"},
                  "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}}},
    }  # fmt: skip
    attack = {
        "num_samples": 4,
        "attacks": [{"config": "configs/attack/fgsm.yaml", "overrides": {"eps": 0.05}}],
    }
    study = {
        "name": "toy",
        "data": str(tmp_path / "data.yaml"),
        "attack_config": str(tmp_path / "attack.yaml"),
        "fit_args": {"trainer.max_epochs": 1},  # the study's options win over the fit config's
        "models": [
            {"name": "toyvictim", "config": str(tmp_path / "fit.yaml")},
            {"name": "toyvictim-b", "config": str(tmp_path / "fit.yaml"), "fit_args": {"seed_everything": 2}},
            {
                "name": "toywrong",
                "config": str(tmp_path / "fit.yaml"),
                "fit_args": {"model.net.class_path": "tests.test_study.ToyWrong"},
            },
        ],
        "output_dir": str(tmp_path / "study"),
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "report": False,
    }
    for name, content in (("data", data), ("fit", fit), ("attack", attack), ("study", study)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(content))
    return tmp_path / "study.yaml", study["tracking_uri"]


def test_study_fits_registers_attacks_reports_and_skips_finished_work_on_rerun(study_files):
    config, uri = study_files
    first = run(["study", "--config", str(config)])
    client = mlflow.MlflowClient(uri)
    assert set(first.models) == {"toyvictim", "toyvictim-b", "toywrong"}
    wrong = first.models.pop("toywrong")  # a victim that cannot be attacked does not stop the others
    assert "nothing to attack" in wrong["attack_error"] and "attack_run" not in wrong
    for name, entry in first.models.items():
        assert not entry["fit_reused"] and not entry["attack_reused"]
        assert entry["model_uri"].startswith(f"models:/{name}-toy/")
        assert str(client.get_model_version_by_alias(f"{name}-toy", "best").version) == "1"
        fit = client.get_run(entry["fit_run"])
        assert fit.info.status == "FINISHED" and FIT_KEY_TAG in fit.data.tags
        assert fit.data.metrics["epoch"] == 0  # fit_args: one epoch, not the config's three
        parent = client.get_run(entry["attack_run"])
        assert parent.info.status == "FINISHED" and ATTACK_KEY_TAG in parent.data.tags
        assert parent.data.params["model_uri"] == entry["model_uri"]
    children = client.search_runs(
        [client.get_experiment_by_name("mlattack-study-toy").experiment_id],
        f"tags.`{ATTACK_NAME_TAG}` = 'FGSM'",
    )
    assert len(children) == 2 and all(c.data.metrics["num_samples"] > 0 for c in children)
    assert first.report is None

    again = run(["study", "--config", str(config)])
    assert again.models.pop("toywrong")["fit_reused"]
    for name, entry in again.models.items():
        assert entry["fit_reused"] and entry["attack_reused"]
        assert (entry["model_uri"], entry["attack_run"]) == (
            first.models[name]["model_uri"],
            first.models[name]["attack_run"],
        )
    assert len(client.search_model_versions("name = 'toyvictim-toy'")) == 1  # nothing fitted twice
    assert len(client.search_runs([client.get_experiment_by_name("mlattack-study-toy").experiment_id])) == 4
