"""COCO 2014 loader on a generated annotations/ + image tree: category mapping, order, splits, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from mlattack.data.base import DataFormatError
from mlattack.data.coco import COCO2014
from tests.data.fixtures import COCO_IMAGES, colour_of, make_coco

S = 16


@pytest.fixture
def coco(tmp_path):
    return make_coco(tmp_path)


def test_categories_sorted_by_id_and_labels_per_image(coco):
    ds = COCO2014(coco, "test", image_size=S)
    assert ds.category_ids == [1, 3, 18, 90]
    assert ds.class_names == ["person", "car", "dog", "toothbrush"]
    assert ds.image_ids == [7, 13, 42] and ds.ids == ["7", "13", "42"]  # ascending image id
    expected = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]], dtype=torch.float32)
    assert torch.equal(ds.targets, expected)  # 7 has no annotation: kept, all negative
    assert not ds.difficult.any() and ds.official_split == "val2014"


def test_train_val_is_seeded_division_of_train2014(coco):
    train, val = COCO2014(coco, "train", image_size=S), COCO2014(coco, "val", image_size=S)
    all_ids = sorted(i for i, _, _ in COCO_IMAGES["train2014"])
    assert len(val) == 1 and len(train) == 9  # val_fraction 0.1 of 10 images
    assert sorted(train.image_ids + val.image_ids) == all_ids and not set(train.ids) & set(val.ids)
    assert train.image_ids == sorted(train.image_ids)
    assert COCO2014(coco, "val", image_size=S).ids == val.ids
    half = COCO2014(coco, "val", image_size=S, val_fraction=0.5)
    assert len(half) == 5
    # each row's target is that image's category (fixture: image 100+k has category (1, 3, 18, 90)[k % 4])
    for row, img_id in enumerate(train.image_ids):
        cat = (1, 3, 18, 90)[(img_id - 100) % 4]
        assert train.targets[row].nonzero().flatten().tolist() == [train.category_ids.index(cat)]


def test_getitem_opens_the_file_named_in_the_json(coco):
    ds = COCO2014(coco, "test", image_size=S)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, S, S) and 0 <= item["image"].min() and item["image"].max() <= 1
        want = torch.tensor(colour_of(ds.file_names[i].removesuffix(".jpg")), dtype=torch.float32) / 255
        assert torch.allclose(item["image"].mean(dim=(1, 2)), want, atol=0.03)
        assert torch.equal(item["target"], ds.targets[i])


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_root_and_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotations/, train2014/, val2014/.*nowhere"):
        COCO2014(tmp_path / "nowhere")
    tmp_path.joinpath("annotations").mkdir()
    with pytest.raises(FileNotFoundError, match=r"instances_val2014\.json"):
        COCO2014(tmp_path)


def test_bad_split_argument(coco):
    with pytest.raises(ValueError, match="split"):
        COCO2014(coco, "val2014")


def test_malformed_json_names_file_line_and_column(coco):
    path = coco / "annotations/instances_val2014.json"
    path.write_text('{\n  "images": [\n    {"id": 1,, "file_name": "a.jpg"}\n  ]\n}\n')
    with pytest.raises(DataFormatError, match=r"instances_val2014\.json:3:14: malformed JSON"):
        COCO2014(coco, "test")


def test_missing_required_field_is_named(coco):
    path = coco / "annotations/instances_val2014.json"
    data = json.loads(path.read_text())
    del data["categories"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"instances_val2014\.json.*'categories'"):
        COCO2014(coco, "test")
    data = json.loads((coco / "annotations/instances_train2014.json").read_text())
    del data["images"][2]["file_name"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"instances_val2014\.json: images\[2\] lacks.*'file_name'"):
        COCO2014(coco, "test")


def test_unknown_category_id_names_file_and_annotation(coco):
    path = coco / "annotations/instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["category_id"] = 55
    path.write_text(json.dumps(data))
    ann_id = data["annotations"][1]["id"]
    with pytest.raises(DataFormatError, match=rf"instances_val2014\.json: annotation id {ann_id} .*55"):
        COCO2014(coco, "test")


def test_annotation_of_unlisted_image_is_an_error(coco):
    path = coco / "annotations/instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["image_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"instances_val2014\.json: annotation id 1 .*999"):
        COCO2014(coco, "test")
