"""The contract of both networks: [0, 1] images in, (N, C) logits out, everything needed to predict inside."""

import numpy as np
import pytest
import torch

from mlattack.models.graph import correlation_matrix, normalized_adjacency
from mlattack.models.mlgcn import IMAGENET_MEAN, IMAGENET_STD, MLGCN
from mlattack.models.mlliw import MLLIW

COOC = np.array([[5, 2, 1, 4], [2, 2, 0, 2], [1, 0, 5, 1], [4, 2, 1, 10]])
COUNTS = np.array([5, 2, 5, 10])


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_mlgcn_logits_contract(images):
    torch.manual_seed(0)
    net = MLGCN(4, backbone="tiny").eval()
    out = net(images)
    assert net.num_classes == 4 and out.shape == (3, 4) and out.dtype == torch.float32
    # normalisation happens inside: the trunk sees ImageNet-standardised pixels; global max pool; f · Wᵀ
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    feature = net.backbone((images - mean) / std).amax(dim=(2, 3))
    torch.testing.assert_close(out, feature @ net.classifiers().t())
    assert net.classifiers().shape == (4, 256)


def test_mlgcn_label_graph_buffers_travel_in_state_dict(images):
    torch.manual_seed(0)
    net = MLGCN(4, backbone="tiny", hidden_dim=16).eval()
    torch.testing.assert_close(net.adjacency, torch.eye(4))  # identity until the training statistics arrive
    before = net(images)
    net.set_label_graph(torch.as_tensor(COOC), torch.as_tensor(COUNTS))
    expected = normalized_adjacency(correlation_matrix(COOC, COUNTS, tau=0.4, p=0.25))
    torch.testing.assert_close(net.adjacency, expected)
    after = net(images)
    assert not torch.allclose(before, after)

    state = net.state_dict()
    assert {"label_embeddings", "adjacency"} <= set(state)
    assert not {"mean", "std"} & set(state)  # constants, not state
    torch.manual_seed(1)
    fresh = MLGCN(4, backbone="tiny", hidden_dim=16).eval()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.adjacency, expected)
    torch.testing.assert_close(fresh(images), after)


def test_mlgcn_tau_and_p_reach_the_graph():
    net = MLGCN(4, backbone="tiny", hidden_dim=8, tau=0.5, p=0.2)
    net.set_label_graph(COOC, COUNTS)
    torch.testing.assert_close(
        net.adjacency, normalized_adjacency(correlation_matrix(COOC, COUNTS, 0.5, 0.2))
    )
    with pytest.raises(ValueError, match="4 classes, the model has 3"):
        MLGCN(3, backbone="tiny", hidden_dim=8).set_label_graph(COOC, COUNTS)
    with pytest.raises(ValueError, match="tau"):
        MLGCN(4, backbone="tiny", tau=2.0)


def test_mlgcn_label_embeddings_from_file_shipped_or_one_hot(tmp_path):
    emb = np.random.default_rng(0).standard_normal((4, 300)).astype(np.float32)
    np.save(tmp_path / "emb.npy", emb)
    net = MLGCN(4, backbone="tiny", hidden_dim=8, label_embeddings=str(tmp_path / "emb.npy"))
    np.testing.assert_array_equal(net.label_embeddings.numpy(), emb)
    assert net.gc1.in_features == 300
    with pytest.raises(ValueError, match=r"emb\.npy: has 4 label embeddings, expected one per class \(5\)"):
        MLGCN(5, backbone="tiny", label_embeddings=str(tmp_path / "emb.npy"))
    voc = MLGCN(20, backbone="tiny", hidden_dim=8, dataset="voc2007")
    assert voc.label_embeddings.shape == (20, 384)
    demo = MLGCN(4, backbone="tiny", hidden_dim=8, dataset="synthetic")
    torch.testing.assert_close(demo.label_embeddings, torch.eye(4))


def test_mlgcn_parameter_groups_follow_reference_rates():
    net = MLGCN(4, backbone="tiny", hidden_dim=8)
    groups = net.parameter_groups(0.01)
    assert [g["name"] for g in groups] == ["backbone", "gcn"]
    assert groups[0]["lr"] == pytest.approx(0.001) and groups[1]["lr"] == 0.01
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters()) and len(set(grouped)) == len(grouped)
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted by a real optimiser


def test_mlgcn_gradient_reaches_the_input(images):
    net = MLGCN(4, backbone="tiny", hidden_dim=8).eval()
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0


def test_mlgcn_default_resnet101_at_small_size():
    net = MLGCN(20, dataset="voc2007").eval()  # the paper's trunk, random weights here
    assert net.gc2.out_features == 2048
    with torch.no_grad():
        assert net(torch.rand(1, 3, 32, 32)).shape == (1, 20)


def test_mlliw_logits_contract_and_normalisation(images):
    net = MLLIW(5, backbone="tiny").eval()
    out = net(images)
    assert net.num_classes == 5 and out.shape == (3, 5)
    torch.testing.assert_close(out, net.fc(net.backbone((images - 0.5) / 0.5).mean(dim=(2, 3))))


def test_mlliw_frozen_backbone_stays_frozen_and_in_eval(images):
    net = MLLIW(5, backbone="tiny").train()
    assert net.training and net.fc.training and not net.backbone.training
    assert not any(m.training for m in net.backbone.modules())
    assert not any(p.requires_grad for p in net.backbone.parameters())
    frozen = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    opt = torch.optim.Adam([g for g in net.parameter_groups(1e-2)], lr=1e-2)
    loss = net(images).sum()
    loss.backward()
    opt.step()
    # neither weights nor BatchNorm running statistics moved
    assert all(torch.equal(v, frozen[k]) for k, v in net.backbone.state_dict().items())
    assert [g["name"] for g in net.parameter_groups(1e-2)] == ["fc"]
    assert net.eval().train(True).backbone.training is False


def test_mlliw_unfrozen_backbone_trains():
    net = MLLIW(5, backbone="tiny", freeze_backbone=False).train()
    assert net.backbone.training and all(p.requires_grad for p in net.backbone.parameters())
    groups = net.parameter_groups(1e-3, backbone_lr_scale=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 5e-4), ("fc", 1e-3)]


def test_mlliw_default_inception_at_small_size():
    net = MLLIW(20).eval()  # the paper's trunk, random weights here; 75 px is Inception-v3's minimum
    assert net.fc.in_features == 2048
    with torch.no_grad():
        assert net(torch.rand(1, 3, 75, 75)).shape == (1, 20)


def test_mlliw_state_dict_round_trip(images):
    torch.manual_seed(0)
    net = MLLIW(5, backbone="tiny").eval()
    torch.manual_seed(1)
    restored = MLLIW(5, backbone="tiny").eval()
    assert not torch.allclose(restored(images), net(images))
    restored.load_state_dict(net.state_dict())
    torch.testing.assert_close(restored(images), net(images))


@pytest.mark.parametrize("cls", [MLGCN, MLLIW])
def test_bad_num_classes_is_refused(cls):
    with pytest.raises(ValueError, match="num_classes"):
        cls(0, backbone="tiny")


# ------------------------------------------------------------------------------- ML-LIW's input transform


def torchvision_inception(num_classes: int, transform_input: bool) -> torch.nn.Module:
    """torchvision's own Inception-v3 with random weights, float64, its BatchNorm statistics set from one batch
    so the eval-mode network actually depends on its input (with unit statistics it is nearly constant)."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.inception_v3(
        weights=None,
        aux_logits=False,
        init_weights=False,
        transform_input=transform_input,
        num_classes=num_classes,
    ).double()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics
    with torch.no_grad():
        tv.train()(torch.rand(4, 3, 75, 75, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    return tv.eval()


def mlliw_with_weights_of(tv: torch.nn.Module, transform_input: bool | None) -> MLLIW:
    net = MLLIW(5, transform_input=transform_input).double().eval()
    trunk_keys = set(net.backbone.state_dict())
    net.backbone.load_state_dict({k: v for k, v in tv.state_dict().items() if k in trunk_keys})
    net.fc.load_state_dict(tv.fc.state_dict())
    return net


def first_conv_input(
    model: torch.nn.Module, conv: torch.nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    seen = []
    handle = conv.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    with torch.no_grad():
        out = model(x)
    handle.remove()
    return seen[0], out


@pytest.mark.parametrize("transform_input", [True, False])
def test_mlliw_trunk_input_is_torchvision_inception_fed_as_the_reference(transform_input):
    # The reference (Inceptionv3Rank) normalised x in [0, 1] to (x - 0.5)/0.5 and fed torchvision's Inception-v3,
    # whose pretrained constructor switches transform_input on. MLLIW must be that same function of x.
    x = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tv = torchvision_inception(5, transform_input)
    net = mlliw_with_weights_of(tv, transform_input)
    tv_in, tv_out = first_conv_input(tv, tv.Conv2d_1a_3x3, (x - 0.5) / 0.5)
    net_in, net_out = first_conv_input(net, net.backbone.Conv2d_1a_3x3, x)
    torch.testing.assert_close(net_in, tv_in)
    torch.testing.assert_close(net_out, tv_out)
    if transform_input:  # per channel: (x - 0.5) * std / 0.25 + (mean - 0.5) / 0.5
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
        torch.testing.assert_close(net_in, (x - 0.5) * std / 0.25 + (mean - 0.5) / 0.5)
    else:
        torch.testing.assert_close(net_in, (x - 0.5) / 0.5)


def test_mlliw_transform_input_default_follows_the_trunk_and_changes_the_output():
    assert MLLIW(5).transform_input is True  # inception_v3: as torchvision's pretrained model (the reference)
    assert MLLIW(5, backbone="tiny").transform_input is False
    assert MLLIW(5, backbone="tiny", transform_input=True).transform_input is True
    x = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tv = torchvision_inception(5, True)
    on, off = mlliw_with_weights_of(tv, True), mlliw_with_weights_of(tv, False)
    with torch.no_grad():
        assert (on(x) - off(x)).abs().max() > 1e-4 * off(x).abs().max()
    assert set(on.state_dict()) == set(off.state_dict())  # no new state: old state_dicts still load
    with pytest.raises(ValueError, match="transform_input"):
        MLLIW(5, backbone="tiny", transform_input="yes")
