"""The datamodule: source registry, loaders, augmentation, statistics, the `data stats` command."""

import pytest
import torch

from mlattack.cli import main
from mlattack.data.datamodule import MultiLabelDataModule, build_dataset
from mlattack.errors import UserError


def dm(**kw):
    opts = {"num_samples": 40, "num_classes": 6}
    return MultiLabelDataModule(
        source="synthetic", image_size=24, batch_size=8, num_workers=0, options=opts, **kw
    )


def test_loaders_yield_contract_batches():
    d = dm(augment=True)
    d.setup("fit")
    batch = next(iter(d.train_dataloader()))
    assert batch["image"].shape == (8, 3, 24, 24)
    assert batch["target"].shape == (8, 6) and batch["difficult"].dtype == torch.bool
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    # evaluation loaders are in dataset order and not augmented
    t1 = next(iter(d.test_dataloader()))
    t2 = next(iter(d.test_dataloader()))
    assert t1["index"].tolist() == list(range(8))
    assert torch.equal(t1["image"], t2["image"])
    # the augmentation is applied to a view: the shared training dataset stays plain
    assert d.dataset("train").transform is None


def test_num_classes_and_stats_come_from_the_training_split():
    d = dm()
    assert d.num_classes == 6 and len(d.class_names) == 6
    stats = d.label_stats("train")
    assert stats.num_images == 40 and stats.num_classes == 6


def test_unknown_source_and_missing_root_are_clear():
    with pytest.raises(ValueError, match="unknown data source 'imagenet'"):
        build_dataset("imagenet", "test")
    with pytest.raises(ValueError, match="data.source"):
        MultiLabelDataModule(source="imagenet")
    with pytest.raises(ValueError, match="needs `root`"):
        build_dataset("voc2007", "test")


def test_data_stats_command_reads_a_data_config_file(capsys):
    main(
        [
            "data",
            "stats",
            "--data",
            "configs/data/synthetic.yaml",
            "--data.options",
            '{"num_samples": 20, "num_classes": 4}',
            "--split",
            "val",
        ]
    )
    out = capsys.readouterr().out
    assert "synthetic / val" in out and "images: 20" in out and "classes: 4" in out


def test_data_stats_command_prints_a_table(capsys):
    main(
        [
            "data",
            "stats",
            "--data.source",
            "synthetic",
            "--data.image_size",
            "16",
            "--data.options",
            '{"num_samples": 30, "num_classes": 5}',
            "--split",
            "test",
        ]
    )
    out = capsys.readouterr().out
    assert "synthetic / test" in out and "images: 30" in out and "| 4 |" in out


def test_voc2007_trainval_options_reach_every_split_and_the_label_graph(tmp_path):
    from tests.data.fixtures import VOC2007_SPLITS, make_voc

    root = make_voc(tmp_path / "voc")
    opts = {"train_split": "trainval", "val_split": "test"}
    d = MultiLabelDataModule("voc2007", str(root), image_size=16, batch_size=4, num_workers=0, options=opts)
    d.setup("fit")
    assert d.dataset("train").ids == sorted(VOC2007_SPLITS["train"] + VOC2007_SPLITS["val"])
    assert d.dataset("val").ids == d.dataset("test").ids == VOC2007_SPLITS["test"]
    stats = d.label_stats("train")  # ML-GCN's adjacency comes from the images it trains on
    assert stats.num_images == 5 and sum(stats.difficult_counts) == 2
    assert (root / ".mlattack" / "stats-voc2007-train-trainval-16.json").is_file()
    plain = MultiLabelDataModule("voc2007", str(root), image_size=16, batch_size=4, num_workers=0)
    assert plain.label_stats("train").num_images == 3  # a separate cache entry, not the trainval one
    batch = next(iter(d.train_dataloader()))
    assert batch["difficult"].shape == batch["target"].shape == (4, 20)


def test_options_are_checked_against_the_source(tmp_path):
    # e.g. a synthetic config's options left in place by a later --data file of another source
    with pytest.raises(
        UserError, match=r"data\.options\.num_classes: not an option of source 'voc2007'"
    ) as err:
        MultiLabelDataModule("voc2007", str(tmp_path), options={"num_classes": 20})
    assert "options: {}" in err.value.hint
    with pytest.raises(UserError, match=r"data\.options\.image_size: set it as data\.image_size"):
        MultiLabelDataModule("synthetic", options={"image_size": 8})
    for bad in ({"batch_size": 0}, {"eval_batch_size": -1}, {"num_workers": -1}, {"image_size": 0}):
        with pytest.raises(ValueError, match=f"data.{next(iter(bad))} must be"):
            MultiLabelDataModule("synthetic", **bad)
