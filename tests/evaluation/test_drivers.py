"""Paper mode follows the study's driver for the network and dataset it attacks (issue 23).

The expectations are read off the reference code (MiLab-HITSZ/2022ChenEmpiricalMLAE, HEAD), not off mlattack:
  demo_mlgcn_voc2007.py l. 143 `np.sum(y[i]) >= 1 and count < 1000`; l. 212 `np.uint8(img * 255)` ... `/ 255`
  demo_mlgcn_voc2012.py l. 147 `>= 1 and count < 1000`; evaluate_adv_ (l. 201-290) judges the float arrays
  demo_mlliw_voc2007.py l. 145 `>= 2 and count>=0 and count<=49`; l. 239-242 the float arrays into the model
  demo_mlliw_voc2012.py l. 140 `>= 2 and count < 1000`; l. 231-232 the float arrays into the model
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mlattack.attacks import FGSM
from mlattack.evaluation.judging import quantize_images
from mlattack.evaluation.runner import AttackSpec, run_attacks
from mlattack.evaluation.settings import AttackSettings
from mlattack.tracking.registry import log_network
from tests.evaluation.toy import LinearColourNet, ToyColours

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: (network, dataset) -> (quantize, min_positive, N) as the study's driver ran it
STUDY = {
    ("mlgcn", "voc2007"): ("floor", 1, 1000),
    ("mlgcn", "voc2012"): ("none", 1, 1000),
    ("mlliw", "voc2007"): ("none", 2, 50),
    ("mlliw", "voc2012"): ("none", 2, 1000),
}


def network_and_source(experiment: Path) -> tuple[str, str]:
    """The network class an experiment config builds and the dataset it trains on (as the attack sees them)."""
    cfg = yaml.safe_load(experiment.read_text())
    model = cfg["model"]
    if isinstance(model, str):
        model = yaml.safe_load((experiment.parent / model).read_text())
    return model["net"]["class_path"].rsplit(".", 1)[1], cfg["data"]["source"]


def paper(network: str, source: str, **explicit) -> AttackSettings:
    return AttackSettings(mode="paper", **explicit).for_driver(network, source)


@pytest.mark.parametrize("name", sorted(f"{n}-{d}" for n, d in STUDY))
def test_each_study_experiment_config_resolves_to_its_drivers_judging_and_selection(name):
    network, source = network_and_source(CONFIGS / "experiments" / f"{name}.yaml")
    s = paper(network, source)
    assert (s.quantize, s.min_positive, s.num_samples) == STUDY[(network.lower(), source)]
    assert s.driver.endswith(f"demo_{network.lower()}_{source}.py")


def test_only_the_mlgcn_voc2007_driver_truncates_to_8_bits():
    judged = {k: paper(*k).quantize for k in STUDY}
    assert [k for k, q in judged.items() if q == "floor"] == [("mlgcn", "voc2007")]


@pytest.mark.parametrize("experiment", sorted((CONFIGS / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_experiment_config_gets_an_explicit_paper_setting(experiment):
    """Pairs without a study driver get mlattack's stated choice: ML-LIW as both its drivers (float, >= 2
    labels), everything else 8-bit with >= 1 label; N 1000; the run records which rule chose."""
    network, source = network_and_source(experiment)
    s = paper(network, source)
    if (network.lower(), source) in STUDY:
        return
    assert s.driver.startswith("none: ")
    expected = ("none", 2) if network.lower() == "mlliw" else ("floor", 1)
    assert (s.quantize, s.min_positive, s.num_samples) == (*expected, 1000)


def test_explicit_settings_override_the_driver_and_fast_mode_judges_floats():
    s = paper("MLGCN", "voc2007", quantize="none", min_positive=3, num_samples=7)
    assert (s.quantize, s.min_positive, s.num_samples) == ("none", 3, 7)
    assert paper("MLLIW", "voc2007", quantize="floor").quantize == "floor"
    fast = AttackSettings(mode="fast").for_driver("MLGCN", "voc2007")
    assert (fast.quantize, fast.min_positive, fast.num_samples) == ("none", 1, 1000)
    assert (
        AttackSettings(mode="fast").for_driver("MLLIW", "voc2007").min_positive == 2
    )  # selection is the driver's
    with pytest.raises(ValueError, match="quantize"):
        AttackSettings(quantize="ceil")
    with pytest.raises(ValueError, match="min_positive"):
        AttackSettings(min_positive=0)


class MLLIW(LinearColourNet):
    """The toy network under ML-LIW's class name: what paper mode keys its driver on."""


def test_the_attack_run_applies_the_driver_of_the_network_it_loads(tmp_path, store, toy_data):
    """End to end: an ML-LIW network on data without a study driver is judged on float images and attacked on
    samples with >= 2 positive labels (both ML-LIW drivers' rules), unless the command says otherwise."""
    client = mlflow.MlflowClient(store)
    run = client.create_run(client.create_experiment("models"))
    uri = log_network(MLLIW(), run.info.run_id, store, "mlliw-toy", image_size=8)
    client.set_terminated(run.info.run_id)
    kw = {
        "output_dir": str(tmp_path / "out"),
        "progress_bar": False,
        "accelerator": "cpu",
        "panel_samples": 0,
    }
    report = run_attacks(uri, toy_data, [AttackSpec(attack=FGSM(eps=0.3))], num_samples=8, **kw)
    params = client.get_run(report.parent_run_id).data.params
    assert (params["quantize"], params["min_positive"]) == ("none", "2")
    assert "ML-LIW" in params["driver"]
    sel = json.loads(open(client.download_artifacts(report.parent_run_id, "selection.json")).read())
    ds = ToyColours()
    assert all(int(ds.targets[i].sum()) >= 2 for i in sel["indices"])
    one_label = (ds.targets.sum(1) == 1) & (ds.pred == ds.targets).all(1)
    assert bool(one_label.any())  # correctly predicted one-label samples exist, and were left out
    override = run_attacks(uri, toy_data, [AttackSpec(attack=FGSM(eps=0.3))], num_samples=8, quantize="floor",
                           min_positive=1, **kw)  # fmt: skip
    params = client.get_run(override.parent_run_id).data.params
    assert (params["quantize"], params["min_positive"]) == ("floor", "1")


def test_floor_is_the_mlgcn_voc2007_drivers_own_numpy_and_pil_path():
    """demo_mlgcn_voc2007.py l. 210-218: CHW float -> HWC -> Image.fromarray(np.uint8(img * 255)) -> (Scale(448), a
    no-op at 448) -> float32 / 255 -> CHW. The same arithmetic, run with NumPy and PIL, is the oracle."""
    g = torch.Generator().manual_seed(0)
    adv = torch.rand(3, 3, 16, 16, generator=g)
    adv[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 254.99999 / 255, 1 / 255])  # the grid's edges
    ref = []
    for img in adv.numpy():
        pil = Image.fromarray(np.uint8(np.transpose(img, (1, 2, 0)) * 255))
        ref.append(np.transpose(np.asarray(pil).astype("float32") / 255, (2, 0, 1)))
    assert torch.equal(quantize_images(adv, "floor"), torch.from_numpy(np.stack(ref)))
    assert torch.equal(quantize_images(adv, "none"), adv)
