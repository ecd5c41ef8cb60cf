"""Hostile files met while reading data or a run's own state (issue 24): each is read right, redone, or refused
naming the file - never turned into a silently wrong number."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mlattack.data.base import DataFormatError, load_rgb


def test_a_16_bit_image_is_scaled_by_its_bit_depth_not_its_own_maximum(tmp_path):
    arr = np.full((4, 6), 32768, dtype=np.uint16)
    arr[:, 3:] = 16384  # half and a quarter of 65535: a mid-grey image, not a white one
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert rgb.shape == (4, 6, 3)
    assert (rgb[:, :3] == 128).all() and (rgb[:, 3:] == 64).all()  # round(v * 255 / 65535)
    Image.fromarray(np.full((2, 2), 70000, dtype=np.int32), mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(DataFormatError, match=r"wide\.tif: integer image with values in \[70000, 70000\]"):
        load_rgb(tmp_path / "wide.tif")
