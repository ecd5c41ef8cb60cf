"""NUS-WIDE loader on generated CSV and official-release trees; also image-mode handling through a dataset."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mlattack.data.base import DataFormatError
from mlattack.data.nuswide import NUS_WIDE_CONCEPTS, NUSWIDE
from tests.data.fixtures import NUS_CSV_ROWS, NUS_OFFICIAL, colour_of, make_nuswide_csv, make_nuswide_official

S = 16
C = {name: i for i, name in enumerate(NUS_WIDE_CONCEPTS)}


def target_of(tags: list[str]) -> torch.Tensor:
    t = torch.zeros(len(NUS_WIDE_CONCEPTS))
    t[[C[x] for x in tags]] = 1
    return t


def test_csv_labels_and_test_split_are_the_val_rows(tmp_path):
    root = make_nuswide_csv(tmp_path)
    ds = NUSWIDE(root, "test", image_size=S)
    assert ds.layout == "csv" and ds.official_split == "val" and ds.num_missing == 0
    assert ds.ids == ["images/9001_1.jpg", "images/9002_2.jpg", "images/9003_3.jpg"]
    assert ds.targets[0].nonzero().flatten().tolist() == [C["clouds"], C["sky"]]
    assert ds.targets[1].sum() == 0
    assert ds.targets[2].nonzero().flatten().tolist() == [C["airport"], C["toy"], C["zebra"]]
    assert ds.num_classes == 81 and NUS_WIDE_CONCEPTS[0] == "airport" and NUS_WIDE_CONCEPTS[-1] == "zebra"


def test_csv_train_val_is_seeded_90_10_of_train_rows(tmp_path):
    root = make_nuswide_csv(tmp_path)
    train, val = NUSWIDE(root, "train", image_size=S), NUSWIDE(root, "val", image_size=S)
    train_rows = {p: tags for p, tags, s in NUS_CSV_ROWS if s == "train"}
    assert len(train) == 18 and len(val) == 2 and not set(train.ids) & set(val.ids)
    assert sorted(train.ids + val.ids) == sorted(train_rows)
    assert NUSWIDE(root, "val", image_size=S).ids == val.ids
    for ds in (train, val):
        for i, path in enumerate(ds.ids):
            assert torch.equal(ds.targets[i], target_of(train_rows[path]))


def test_csv_missing_images_skipped_with_one_warning(tmp_path):
    root = make_nuswide_csv(tmp_path, missing={"images/9002_2.jpg", "images/9003_3.jpg"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = NUSWIDE(root, "test", image_size=S)
    msgs = [str(w.message) for w in caught if "missing" in str(w.message)]
    assert len(msgs) == 1 and "2 of 3" in msgs[0]
    assert ds.num_missing == 2 and ds.ids == ["images/9001_1.jpg"]
    assert torch.equal(ds.targets[0], target_of(["sky", "clouds"]))


def test_official_layout_labels_paths_and_splits(tmp_path):
    root = make_nuswide_official(tmp_path, missing={"zoo\\0002_77.jpg"})
    with pytest.warns(UserWarning, match="1 of 3"):
        test = NUSWIDE(root, "test", image_size=S)
    assert test.layout == "official" and test.official_split == "Test" and test.num_missing == 1
    assert test.ids == ["actor/0001_2124494179.jpg", "zoo/0003_78.jpg"]
    assert torch.equal(test.targets, torch.stack([target_of(["person", "sky"]), target_of([])]))
    train, val = NUSWIDE(root, "train", image_size=S), NUSWIDE(root, "val", image_size=S)
    assert len(train) == 9 and len(val) == 1 and not set(train.ids) & set(val.ids)
    listed = {p.replace("\\", "/"): tags for p, tags in NUS_OFFICIAL["Train"]}
    assert sorted(train.ids + val.ids) == sorted(listed)
    for i, path in enumerate(train.ids):
        assert torch.equal(train.targets[i], target_of(listed[path]))


def test_getitem_in_both_layouts(tmp_path):
    for ds in (
        NUSWIDE(make_nuswide_csv(tmp_path / "csv"), "test", image_size=S),
        NUSWIDE(make_nuswide_official(tmp_path / "off"), "test", image_size=S),
    ):
        item = ds[0]
        assert item["image"].shape == (3, S, S) and 0 <= item["image"].min() and item["image"].max() <= 1
        want = torch.tensor(colour_of(ds.ids[0].rsplit("/", 1)[-1].removesuffix(".jpg"))) / 255
        assert torch.allclose(item["image"].mean(dim=(1, 2)), want.float(), atol=0.03)
        assert torch.equal(item["target"], ds.targets[0])


def test_grayscale_rgba_and_16bit_png_load_as_rgb(tmp_path):
    rows = [(f"img/{n}.png", ["sky"], "val") for n in ("gray", "rgba", "deep")]
    make_nuswide_csv(tmp_path, rows=rows)  # writes RGB placeholders, replaced below by the modes under test
    Image.new("L", (20, 12), 100).save(tmp_path / "img/gray.png")
    Image.new("RGBA", (20, 12), (10, 200, 30, 0)).save(tmp_path / "img/rgba.png")
    arr16 = np.full((12, 20), 32768, dtype=np.uint16)
    arr16[:, 10:] = 16384  # half and a quarter of the 16-bit range
    Image.fromarray(arr16).save(tmp_path / "img/deep.png")
    assert Image.open(tmp_path / "img/deep.png").mode.startswith("I")
    ds = NUSWIDE(tmp_path, "test", image_size=S)
    gray, rgba, deep = (ds[i]["image"] for i in range(3))
    for x in (gray, rgba, deep):
        assert x.shape == (3, S, S) and x.dtype == torch.float32
    assert torch.allclose(gray, torch.full_like(gray, 100 / 255), atol=1e-6)
    assert torch.allclose(rgba[:, 0, 0], torch.tensor([10, 200, 30]) / 255, atol=1e-6)  # alpha dropped
    # scaled by the bit depth (65535), not by the image's own maximum
    assert torch.allclose(deep[:, :, 0], torch.full_like(deep[:, :, 0], 128 / 255), atol=1e-6)
    assert torch.allclose(deep[:, :, -1], torch.full_like(deep[:, :, -1], 64 / 255), atol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input


def test_missing_root_and_missing_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*nus_wide_data\.csv"):
        NUSWIDE(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"nus_wide_data\.csv \(CSV layout\).*ImageList"):
        NUSWIDE(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"Concepts81\.txt"):
        NUSWIDE(tmp_path, layout="official")
    with pytest.raises(ValueError, match="layout"):
        NUSWIDE(tmp_path, layout="xml")


def test_csv_unknown_tag_names_file_line_and_tag(tmp_path):
    rows = NUS_CSV_ROWS[:2] + [("images/x.jpg", ["sky", "unicorn"], "val")]
    make_nuswide_csv(tmp_path, rows=rows, name="my.csv")
    with pytest.raises(DataFormatError, match=r"my\.csv:4 \(field 'label'\): unknown tag 'unicorn'"):
        NUSWIDE(tmp_path, csv_file="my.csv")


def test_csv_label_is_parsed_as_a_literal_never_evaluated(tmp_path):
    make_nuswide_csv(tmp_path, rows=NUS_CSV_ROWS[:1])
    csv_path = tmp_path / "nus_wide_data.csv"
    marker = tmp_path / "pwned"
    csv_path.write_text(
        csv_path.read_text()
        + f"images/0000_1000.jpg,\"__import__('pathlib').Path('{marker}').touch()\",val\n"
    )
    with pytest.raises(DataFormatError, match=r"nus_wide_data\.csv:3 \(field 'label'\).*list of tag names"):
        NUSWIDE(tmp_path)
    assert not marker.exists()
    csv_path.write_text("filepath,label,split_name\nimages/0000_1000.jpg,\"['sky']\",test\n")
    with pytest.raises(DataFormatError, match=r"nus_wide_data\.csv:2 \(field 'split_name'\)"):
        NUSWIDE(tmp_path)
    csv_path.write_text("filepath,labels,split_name\n")
    with pytest.raises(DataFormatError, match=r"nus_wide_data\.csv:1: header lacks column 'label'"):
        NUSWIDE(tmp_path)


def test_official_concepts_file_must_match_known_names(tmp_path):
    root = make_nuswide_official(tmp_path)
    names = list(NUS_WIDE_CONCEPTS)
    names[4] = "bird"
    (root / "Concepts81.txt").write_text("\n".join(names) + "\n")
    with pytest.raises(DataFormatError, match=r"Concepts81\.txt:5: expected concept 'birds', got 'bird'"):
        NUSWIDE(root)
    (root / "Concepts81.txt").write_text("\n".join(NUS_WIDE_CONCEPTS[:80]) + "\n")
    with pytest.raises(DataFormatError, match=r"Concepts81\.txt: 80 concepts listed, expected 81"):
        NUSWIDE(root)


def test_official_malformed_label_files(tmp_path):
    root = make_nuswide_official(tmp_path)
    label_file = root / "Groundtruth/TrainTestLabels/Labels_sky_Test.txt"
    label_file.write_text("1\nyes\n0\n")
    with pytest.raises(DataFormatError, match=r"Labels_sky_Test\.txt:2: expected 0 or 1, got 'yes'"):
        NUSWIDE(root)
    label_file.write_text("1\n0\n")
    with pytest.raises(
        DataFormatError, match=r"Labels_sky_Test\.txt: 2 labels, expected 3.*TestImagelist\.txt"
    ):
        NUSWIDE(root)
    label_file.unlink()
    with pytest.raises(FileNotFoundError, match=r"Labels_sky_Test\.txt"):
        NUSWIDE(root)


def test_no_listed_image_on_disk_is_an_error_that_says_where_they_are(tmp_path):
    csv_root = make_nuswide_csv(tmp_path / "csv")
    shutil.move(csv_root / "images", csv_root / "photos")  # the CSV says images/...
    with pytest.raises(FileNotFoundError, match=r"none of the 3 NUS-WIDE test images is under") as err:
        NUSWIDE(csv_root)
    assert "photos" in err.value.hint and "relative to" in err.value.hint
    official = make_nuswide_official(tmp_path / "official")
    shutil.move(official / "Flickr", official / "images")  # image_dir defaults to Flickr
    with pytest.raises(FileNotFoundError, match=r"NUS-WIDE test images") as err:
        NUSWIDE(official)
    assert err.value.hint.endswith("set data.options.image_dir to 'images'")
    assert NUSWIDE(official, image_dir="images").num_missing == 0  # the hint's fix works
