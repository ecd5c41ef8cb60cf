"""VOC loader on generated devkit trees: labels, difficult mask, split mapping, images and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlattack.data.base import DataFormatError
from mlattack.data.voc import VOC2007, VOC2012, VOC_CLASSES, VOCDataset
from mlattack.errors import UserError
from tests.data.fixtures import (
    VOC2007_SPLITS,
    VOC2012_LABELS,
    VOC2012_SPLITS,
    VOC_LABELS,
    colour_of,
    make_voc,
)

S = 16


def expected(labels: dict[str, dict[str, int]], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    t = np.array([[labels[i].get(c, -1) == 1 for c in VOC_CLASSES] for i in ids], dtype=np.float32)
    d = np.array([[labels[i].get(c, -1) == 0 for c in VOC_CLASSES] for i in ids])
    return t, d


@pytest.fixture
def voc07(tmp_path):
    return make_voc(tmp_path, "2007")


def test_voc2007_labels_label_by_label(voc07):
    ds = VOC2007(voc07, "train", image_size=S)
    assert ds.ids == ["000001", "000002", "000003"] and ds.class_names == list(VOC_CLASSES)
    person, dog, car = (VOC_CLASSES.index(c) for c in ("person", "dog", "car"))
    # 000001: person + dog present
    assert ds.targets[0].nonzero().flatten().tolist() == sorted([person, dog])
    # 000002: car present, person difficult -> negative target, difficult mask set
    assert ds.targets[1].nonzero().flatten().tolist() == [car]
    assert ds.difficult[1].nonzero().flatten().tolist() == [person] and ds.targets[1, person] == 0
    t, d = expected(VOC_LABELS, ds.ids)
    assert torch.equal(ds.targets, torch.from_numpy(t)) and torch.equal(ds.difficult, torch.from_numpy(d))


def test_voc2007_split_mapping_and_official_split(voc07):
    for split in ("train", "val", "test"):
        ds = VOC2007(voc07, split, image_size=S)
        assert ds.ids == VOC2007_SPLITS[split] and ds.official_split == split and ds.name == "voc2007"


def test_voc2012_seeded_division_of_train_and_test_is_val(tmp_path):
    root = make_voc(tmp_path, "2012")
    train, val = VOC2012(root, "train", image_size=S), VOC2012(root, "val", image_size=S)
    assert len(train) == 8 and len(val) == 2 and not set(train.ids) & set(val.ids)
    assert sorted(train.ids + val.ids) == VOC2012_SPLITS["train"]
    assert train.ids == sorted(train.ids)  # dataset order is kept inside each part
    assert VOC2012(root, "val", image_size=S).ids == val.ids  # same seed -> same division
    assert VOC2012(root, "val", image_size=S, seed=7).ids != val.ids
    assert train.official_split == "train" and val.official_split == "train"
    test = VOC2012(root, "test", image_size=S)
    assert test.ids == VOC2012_SPLITS["val"] and test.official_split == "val"
    t, d = expected(VOC2012_LABELS, val.ids)
    assert torch.equal(val.targets, torch.from_numpy(t)) and torch.equal(val.difficult, torch.from_numpy(d))


def test_root_may_be_the_year_folder_and_ids_may_come_from_class_files(tmp_path):
    root = make_voc(tmp_path, "2007", split_lists=False)
    a = VOCDataset(root, "2007", "test", image_size=S)
    b = VOCDataset(root / "VOCdevkit" / "VOC2007", "2007", "test", image_size=S)
    c = VOCDataset(root / "VOCdevkit", "2007", "test", image_size=S)
    assert a.ids == b.ids == c.ids == VOC2007_SPLITS["test"]
    assert torch.equal(a.targets, b.targets)


def test_annotations_label_source_matches_imagesets(voc07):
    for split in ("train", "test"):
        a = VOC2007(voc07, split, image_size=S)
        b = VOC2007(voc07, split, image_size=S, label_source="annotations")
        assert a.ids == b.ids
        assert torch.equal(a.targets, b.targets) and torch.equal(a.difficult, b.difficult)


def test_getitem_returns_resized_image_and_target(voc07):
    ds = VOC2007(voc07, "test", image_size=S)
    for i in range(len(ds)):
        item = ds[i]
        x = item["image"]
        assert x.shape == (3, S, S) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        want = torch.tensor(colour_of(ds.ids[i]), dtype=torch.float32) / 255
        assert torch.allclose(x.mean(dim=(1, 2)), want, atol=0.03)  # the right file was opened
        assert torch.equal(item["target"], ds.targets[i]) and item["index"] == i


def test_voc2007_trainval_from_official_files_or_train_plus_val(tmp_path):
    # A tree without trainval files gets train + val in id order; the devkit's own trainval files give the same.
    combined = VOC2007(
        make_voc(tmp_path / "a"), "train", image_size=S, train_split="trainval", val_split="test"
    )
    trainval = sorted(VOC2007_SPLITS["train"] + VOC2007_SPLITS["val"])
    assert combined.ids == trainval and combined.official_split == "trainval"
    t, d = expected(VOC_LABELS, trainval)
    assert torch.equal(combined.targets, torch.from_numpy(t)) and torch.equal(
        combined.difficult, torch.from_numpy(d)
    )
    assert combined.difficult.sum() == 2  # 000002 person and 000004 chair
    official = make_voc(tmp_path / "b", splits={**VOC2007_SPLITS, "trainval": trainval})
    from_files = VOC2007(official, "train", image_size=S, train_split="trainval", val_split="test")
    assert from_files.ids == combined.ids and torch.equal(from_files.targets, combined.targets)
    assert torch.equal(from_files.difficult, combined.difficult)
    xml = VOC2007(
        official, "train", image_size=S, label_source="annotations", train_split="trainval", val_split="test"
    )
    assert xml.ids == combined.ids and torch.equal(xml.targets, combined.targets)
    val = VOC2007(official, "val", image_size=S, train_split="trainval", val_split="test")
    assert val.ids == VOC2007_SPLITS["test"] and val.official_split == "test"
    test = VOC2007(official, "test", image_size=S, train_split="trainval", val_split="test")
    assert test.ids == VOC2007_SPLITS["test"]  # the attacked split never moves
    # an item still carries a {0, 1} target and the difficult mask beside it
    item = combined[combined.ids.index("000002")]
    person = VOC_CLASSES.index("person")
    assert (
        item["target"][person] == 0
        and item["difficult"][person]
        and set(item["target"].tolist()) <= {0.0, 1.0}
    )


def test_official_split_options_are_checked(voc07):
    with pytest.raises(ValueError, match="train_split must be one of"):
        VOC2007(voc07, "train", train_split="all")
    with pytest.raises(ValueError, match="val_split must be one of"):
        VOC2007(voc07, "train", val_split="train")
    with pytest.raises(ValueError, match="val_split: 'val' is part of train_split 'trainval'"):
        VOC2007(voc07, "train", train_split="trainval")
    with pytest.raises(ValueError, match="train_split/val_split choose official VOC2007 splits"):
        VOCDataset(voc07, "2012", "train", train_split="trainval", val_split="test")


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_root_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*VOCdevkit/VOC2007"):
        VOC2007(tmp_path / "nowhere")


def test_bad_arguments_raise_value_error(voc07):
    with pytest.raises(ValueError, match="split"):
        VOC2007(voc07, "trainval")
    with pytest.raises(ValueError, match="year"):
        VOCDataset(voc07, "2010")
    with pytest.raises(ValueError, match="label_source"):
        VOC2007(voc07, label_source="xml")


def test_malformed_class_line_names_file_and_line(voc07):
    path = voc07 / "VOCdevkit/VOC2007/ImageSets/Main/dog_test.txt"
    lines = path.read_text().splitlines()
    lines[1] = "000007 2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"dog_test\.txt:2.*<1\|-1\|0>"):
        VOC2007(voc07, "test")


def test_inconsistent_ids_across_class_files(voc07):
    main = voc07 / "VOCdevkit/VOC2007/ImageSets/Main"
    (main / "cat_test.txt").write_text("000006 -1\n000007 -1\n999999 1\n")
    with pytest.raises(DataFormatError, match=r"cat_test\.txt:3.*'999999'"):
        VOC2007(voc07, "test")
    (main / "cat_test.txt").write_text("000006 -1\n000007 -1\n")
    with pytest.raises(DataFormatError, match=r"cat_test\.txt.*missing.*000008"):
        VOC2007(voc07, "test")
    (main / "test.txt").write_text("000006\n000007 extra\n")
    with pytest.raises(DataFormatError, match=r"test\.txt:2"):
        VOC2007(voc07, "test")


def test_xml_errors_name_the_file(voc07):
    ann = voc07 / "VOCdevkit/VOC2007/Annotations"
    (ann / "000007.xml").write_text("<annotation><object><name>dog</name>")
    with pytest.raises(DataFormatError, match=r"000007\.xml: malformed XML"):
        VOC2007(voc07, "test", label_source="annotations")
    (ann / "000007.xml").write_text("<annotation><folder>VOC2007</folder></annotation>")
    with pytest.raises(DataFormatError, match=r"000007\.xml.*no <object>"):
        VOC2007(voc07, "test", label_source="annotations")
    (ann / "000007.xml").write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(DataFormatError, match=r"000007\.xml.*unknown class name 'unicorn'"):
        VOC2007(voc07, "test", label_source="annotations")


def test_truncated_and_empty_jpeg_raise_through_getitem(voc07):
    ds = VOC2007(voc07, "test", image_size=S)
    jpg = voc07 / "VOCdevkit/VOC2007/JPEGImages"
    data = (jpg / "000006.jpg").read_bytes()
    (jpg / "000006.jpg").write_bytes(data[: len(data) // 2])
    (jpg / "000007.jpg").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"000006\.jpg.*truncated"):
        ds[0]
    with pytest.raises(DataFormatError, match=r"000007\.jpg.*empty"):
        ds[1]
    assert ds[2]["image"].shape == (3, S, S)  # the intact image still loads


def test_a_devkit_of_the_other_year_is_refused_not_loaded(tmp_path):
    v07, v12 = make_voc(tmp_path / "a", "2007"), make_voc(tmp_path / "b", "2012")
    # the two years share a layout: without the check, voc2012 would load VOC2007 without a word
    with pytest.raises(UserError, match=r"is the VOC2007 devkit but the source is voc2012") as err:
        VOC2012(v07 / "VOCdevkit" / "VOC2007")
    assert err.value.hint.startswith("use --data.source voc2007")
    with pytest.raises(UserError, match=r"is the VOC2012 devkit but the source is voc2007"):
        VOC2007(v12 / "VOCdevkit" / "VOC2012", "train")
    with pytest.raises(FileNotFoundError, match=r"no VOC2007 devkit at") as err:
        VOC2007(v12)
    assert err.value.hint == "found VOC2012 there: use --data.source voc2012"
