"""The experiment configs load through LightningCLI and carry each reference's recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlattack.cli import lightning_main
from tests.data.fixtures import VOC2007_SPLITS, make_voc

EXPERIMENTS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
STUDY_FAMILIES = ("mlgcn", "mlliw")  # the study's two recipes; the other families have their own tests


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    """No cached ImageNet weights: the trunks are random, as in the other model tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def printed_config(name: str, capsys) -> dict:
    with pytest.raises(SystemExit) as done:
        lightning_main(["fit", "--config", str(EXPERIMENTS / name), "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml") if p.name.startswith(STUDY_FAMILIES))
)
def test_every_experiment_config_parses_with_its_reference_recipe(name, capsys):
    cfg = printed_config(name, capsys)
    model, data, trainer = cfg["model"], cfg["data"], cfg["trainer"]
    if name.startswith("mlgcn"):
        assert model["difficult"] == "positive" and trainer["max_epochs"] == 101
        assert (
            model["lr_scheduler"]["init_args"]["milestones"] == [40]
            and model["optimizer"]["init_args"]["lr"] == 0.01
        )
        assert data["batch_size"] == 16 and data["image_size"] == 448 and data["augment"] is True
        assert trainer["gradient_clip_val"] == 10.0 and cfg["checkpoint"]["monitor"] == "val/mAP"
    else:
        assert model["difficult"] == "ignore" and trainer["max_epochs"] == 100
        assert model["net"]["init_args"]["transform_input"] is None  # -> on for inception_v3
        assert data["batch_size"] == 100 and cfg["checkpoint"]["monitor"] == "val/loss"
        assert cfg["checkpoint"]["mode"] == "min"
    if name == "mlgcn-voc2007.yaml":
        assert data["options"] == {"train_split": "trainval", "val_split": "test"}
    if name == "mlliw-voc2007.yaml":
        assert data["image_size"] == 299 and data["augment"] is False
        assert data["options"] == {"train_split": "train", "val_split": "val"}


@pytest.mark.parametrize(
    ("name", "train_ids", "val_split", "difficult", "transform_input"),
    [
        (
            "mlgcn-voc2007.yaml",
            sorted(VOC2007_SPLITS["train"] + VOC2007_SPLITS["val"]),
            "test",
            "positive",
            None,
        ),
        ("mlliw-voc2007.yaml", VOC2007_SPLITS["train"], "val", "ignore", True),
    ],
)
def test_voc2007_experiments_instantiate_on_a_generated_devkit(
    tmp_path, name, train_ids, val_split, difficult, transform_input
):
    root = make_voc(tmp_path / "voc")
    cli = lightning_main(
        ["--config", str(EXPERIMENTS / name), "--data.root", str(root), "--data.num_workers", "0"],
        run=False,
    )
    dm, module = cli.datamodule, cli.model
    assert dm.dataset("train").ids == train_ids and dm.dataset("val").official_split == val_split
    assert dm.dataset("test").ids == VOC2007_SPLITS["test"]
    assert module.difficult == difficult and module.net.num_classes == 20
    if transform_input is not None:
        assert module.net.transform_input is transform_input
    assert cli.trainer.max_epochs == (101 if name.startswith("mlgcn") else 100)
