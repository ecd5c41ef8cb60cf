"""The built-in dataset: determinism, co-occurrence structure, statistics, on-disk form, bad input."""

import numpy as np
import pytest
import torch

from mlattack.data.base import DataFormatError
from mlattack.data.stats import compute_label_stats, label_stats
from mlattack.data.synthetic import SyntheticMultiLabel, synthetic_class_names


def small(split="train", **kw):
    kw.setdefault("num_samples", 300)
    return SyntheticMultiLabel(split, image_size=32, **kw)


def test_deterministic_from_seed_and_index_independent():
    a, b = small(), small()
    assert torch.equal(a.targets, b.targets)
    assert torch.equal(a[17]["image"], b[17]["image"])
    # rendering image 17 does not depend on having rendered others first
    c = small()
    assert torch.equal(c[17]["image"], a[17]["image"])
    other = small(seed=7)
    assert not torch.equal(other.targets, a.targets)


def test_splits_differ_and_items_have_the_contract_shape():
    tr, te = small("train"), small("test")
    assert not torch.equal(tr.targets, te.targets)
    item = te[3]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["target"].shape == (20,) and set(item["target"].unique().tolist()) <= {0.0, 1.0}
    assert item["index"] == 3 and not item["difficult"].any()


def test_every_image_has_between_one_and_max_labels():
    ds = small(max_labels=4)
    counts = ds.targets.sum(1)
    assert counts.min() >= 1 and counts.max() <= 4
    assert 1.5 < float(counts.mean()) < 2.6  # VOC/COCO-like density


def test_cooccurrence_is_structured_by_scene():
    ds = small(num_samples=1000)
    stats = compute_label_stats(ds)
    m, n = stats.cooccurrence_matrix(), stats.label_counts()
    p = m / n[:, None]  # P(j | i)
    same = np.zeros_like(p, dtype=bool)
    for scene in ds.scenes:
        same[np.ix_(scene, scene)] = True
    np.fill_diagonal(same, False)
    cross = ~same
    np.fill_diagonal(cross, False)
    assert p[same].mean() > 4 * p[cross].mean()


def test_label_stats_match_direct_computation_and_are_cached(tmp_path):
    ds = small(num_samples=120)
    stats = label_stats(ds, tmp_path, key="k")
    y = ds.targets.numpy()
    assert stats.num_images == 120
    assert stats.avg_labels == pytest.approx(y.sum(1).mean())
    assert stats.class_counts == y.sum(0).astype(int).tolist()
    np.testing.assert_array_equal(stats.cooccurrence_matrix(), y.T @ y)
    assert (tmp_path / "stats-k.json").is_file()
    again = label_stats(ds, tmp_path, key="k")
    assert again == stats
    table = stats.table()
    assert "red_circle" in table and "avg labels/image" in table


def test_materialised_on_disk_equals_on_the_fly(tmp_path):
    fly = small(num_samples=6)
    disk = small(num_samples=6, root=tmp_path)
    files = sorted((tmp_path).rglob("*.png"))
    assert len(files) == 6 and list(tmp_path.rglob("labels.csv"))
    for i in range(6):
        assert torch.equal(fly[i]["image"], disk[i]["image"])
    # a folder that does not match the settings is refused with the file named
    (disk._split_dir() / "labels.csv").write_text("id,x\n")
    with pytest.raises(DataFormatError, match="labels.csv"):
        small(num_samples=6, root=tmp_path)


def test_class_names_and_bad_arguments():
    assert len(set(synthetic_class_names(20))) == 20
    assert len(set(synthetic_class_names(80))) == 80
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_class_names(1)
    with pytest.raises(ValueError, match="split"):
        SyntheticMultiLabel("dev")
    with pytest.raises(ValueError, match="num_samples"):
        SyntheticMultiLabel("train", num_samples=0)
