"""Hostile files met while reading data or a run's own state (issue 24): each is read right, redone, or refused
naming the file - never turned into a silently wrong number."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from PIL import Image

from mlattack.data.base import DataFormatError, load_rgb
from mlattack.rundir.examples import load_examples
from mlattack.tracking.attack_runs import EXAMPLES_NPZ
from tests.evaluation.test_runner import CrashAtBatch
from tests.reliability.jobs import ATTACKS, run_toy_attack


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


def test_an_examples_chunk_of_another_image_size_is_redone(tmp_path, store, toy_source, registered_toy_model):
    """A valid ``.npz`` whose images are 16x16 in an 8x8 run's examples: damaged, its samples attacked again; the
    run's ``adversarial.npz`` equals an uninterrupted run's (it was: every re-run failed in np.stack, no file named).
    """
    reference = run_toy_attack(registered_toy_model, tmp_path / "ref", experiment="reference")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_toy_attack(registered_toy_model, out, [CrashAtBatch(3)])
    chunk = sorted(out.glob("*/FGSM.examples.*.npz"))[0]
    with np.load(chunk) as z:
        positions = z["positions"]
    wrong = np.zeros((len(positions), 3, 16, 16), dtype=np.uint8)
    np.savez(chunk, positions=positions, adv=wrong, clean=wrong)
    resumed = run_toy_attack(registered_toy_model, out)
    client = mlflow.MlflowClient(store)
    for name, _ in ATTACKS:
        got, want = (load_examples(client.download_artifacts(r.child_run_ids[name], EXAMPLES_NPZ, str(tmp_path / d)))
                     for r, d in ((resumed, f"got-{name}"), (reference, f"want-{name}")))  # fmt: skip
        assert np.array_equal(got.positions, want.positions) and np.array_equal(got.adv, want.adv), name
        assert got.adv.shape[2:] == (8, 8)


def test_a_network_json_naming_a_library_class_is_refused_before_building():
    """``torch.nn.Linear`` with matching weights used to be built (then failed with a RuntimeError traceback)."""
    from mlattack.tracking.network_files import UntrustedNetwork, build, network_class
    from tests.evaluation.toy import LinearColourNet

    for class_path in ("torch.nn.Linear", "collections.OrderedDict", "this.Zen"):
        with pytest.raises(UntrustedNetwork, match="is not an mlattack network"):
            build({"class_path": class_path, "init_args": {"in_features": 3, "out_features": 5}})
    assert network_class("tests.evaluation.toy.LinearColourNet") is LinearColourNet  # a user's own, imported
    assert network_class("mlattack.models.vit.ViT").__module__ == "mlattack.models.vit"
