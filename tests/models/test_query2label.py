"""Query2Label: logits contract, label queries and their attention, frozen trunk, Jacobian, fit + registry."""

import warnings
from pathlib import Path

import pytest
import torch
import yaml

from mlattack.attacks.jacobian import label_jacobian
from mlattack.evaluation.fast import fast_attack_copy
from mlattack.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from mlattack.models.module import MultiLabelClassifier
from mlattack.models.query2label import Query2Label, sine_position_encoding
from tests.models.registry_round_trip import fit_register_and_reload

EXPERIMENTS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
SMALL = {"backbone": "tiny", "hidden_dim": 32, "num_heads": 4, "ff_dim": 64}


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def small(num_classes: int = 5, **kw) -> Query2Label:
    torch.manual_seed(0)
    return Query2Label(num_classes, **(SMALL | kw)).eval()


def test_logits_contract_and_group_fc_head(images):
    net = small()
    out = net(images)
    assert net.num_classes == 5 and out.shape == (3, 5) and out.dtype == torch.float32
    h = net.label_features(images)
    assert h.shape == (3, 5, 32)
    # label c's logit is its own query's output times its own weight vector
    torch.testing.assert_close(out, torch.einsum("ncd,cd->nc", h, net.head.weight) + net.head.bias)
    # normalisation happens inside, with the trunk's statistics (ImageNet for the CNN trunks)
    torch.testing.assert_close(net.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(net.std.flatten(), torch.tensor(IMAGENET_STD))
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 5)  # any size: the position encoding follows the map
    assert not {"mean", "std"} & set(net.state_dict())


def test_sine_position_encoding_separates_rows_and_columns():
    pe = sine_position_encoding(3, 4, 16, torch.device("cpu"), torch.float32).view(3, 4, 16)
    assert pe.abs().max() <= 1.0
    # first half depends on the row only, second half on the column only
    assert torch.equal(pe[:, :1, :8].expand(3, 4, 8), pe[..., :8])
    assert torch.equal(pe[:1, :, 8:].expand(3, 4, 8), pe[..., 8:])
    assert len({tuple(v.tolist()) for v in pe.view(12, 16)}) == 12  # every position distinct


def test_without_query_self_attention_each_label_reads_the_image_alone(images):
    net = small()
    before = net(images)
    with torch.no_grad():
        net.queries.weight[1] += 1.0
    after = net(images)
    assert not torch.allclose(after[:, 1], before[:, 1])
    torch.testing.assert_close(after[:, [0, 2, 3, 4]], before[:, [0, 2, 3, 4]])  # other labels untouched
    linked = small(decoder_self_attention=True)
    before = linked(images)
    with torch.no_grad():
        linked.queries.weight[1] += 1.0
    assert not torch.allclose(linked(images)[:, 0], before[:, 0])  # queries now see each other


def test_encoder_layers_and_projection_follow_the_arguments():
    assert len(small(encoder_layers=0).encoder) == 0 and len(small(decoder_layers=3).decoder) == 3
    assert small().input_proj.out_channels == 32
    same = small(hidden_dim=256, ff_dim=32)  # the trunk's width already: no projection, as the paper's code
    assert isinstance(same.input_proj, torch.nn.Identity)


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_classes", 0), ("hidden_dim", 30), ("num_heads", 0), ("encoder_layers", -1), ("decoder_layers", 0),
     ("ff_dim", 0), ("dropout", 1.0)],
)  # fmt: skip
def test_bad_hyperparameters_are_refused_naming_the_field(field, value):
    kw = SMALL | {field: value}
    num_classes = kw.pop("num_classes", 5)
    with pytest.raises(ValueError, match=field):
        Query2Label(num_classes, **kw)


def test_frozen_trunk_stays_frozen_and_in_eval_while_the_transformer_trains(images):
    net = small(freeze_backbone=True).train()
    assert net.training and net.decoder.training and not net.backbone.training
    assert [g["name"] for g in net.parameter_groups(1e-3)] == ["transformer"]
    frozen = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    module = MultiLabelClassifier(net, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    opt = module.configure_optimizers()
    batch = {"image": images, "target": (torch.rand(3, 5) > 0.5).float(), "difficult": torch.zeros(3, 5)}
    head = net.head.weight.detach().clone()
    loss = module.training_step(batch, 0)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(net.head.weight, head)
    assert all(torch.equal(v, frozen[k]) for k, v in net.backbone.state_dict().items())
    trainable = small()
    groups = trainable.parameter_groups(1e-3, backbone_lr_scale=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 5e-4), ("transformer", 1e-3)]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in trainable.parameters())  # each parameter exactly once


def test_label_jacobian_equals_per_label_backward_passes(images):
    net = small(decoder_self_attention=True)
    for p in net.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        values, jac = label_jacobian(net, images[:2])
    assert not [w for w in record if "batching rule" in str(w.message)]  # vmap batches the attention: no loop
    rows = []
    for c in range(5):
        x = images[:2].clone().requires_grad_(True)
        rows.append(torch.autograd.grad(net(x)[:, c].sum(), x)[0])
    torch.testing.assert_close(values, net(images[:2]))
    torch.testing.assert_close(jac, torch.stack(rows, dim=1), rtol=1e-4, atol=1e-7)
    assert jac.abs().amax() > 0


def test_the_attack_loops_fast_copy_predicts_the_same(images):
    net = small()
    torch.testing.assert_close(fast_attack_copy(net)(images), net(images), rtol=1e-5, atol=1e-5)


def test_fit_registers_a_network_that_reloads_identically(tmp_path, monkeypatch):
    fit_register_and_reload(tmp_path, monkeypatch, "demo-query2label.yaml", "query2label-synthetic")


def test_experiment_configs_parse_with_the_paper_layout(capsys):
    from mlattack.cli import lightning_main

    with pytest.raises(SystemExit) as done:
        lightning_main(["fit", "--config", str(EXPERIMENTS / "query2label-voc2007.yaml"), "--print_config"])
    assert done.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    net = cfg["model"]["net"]["init_args"]
    assert cfg["model"]["net"]["class_path"] == "mlattack.models.query2label.Query2Label"
    assert (net["backbone"], net["hidden_dim"], net["encoder_layers"], net["decoder_layers"]) == (
        "resnet101",
        2048,
        1,
        2,
    )
    assert cfg["trainer"]["max_epochs"] == cfg["model"]["lr_scheduler"]["init_args"]["total_steps"] == 80
    assert cfg["data"]["image_size"] == 448 and cfg["data"]["options"]["val_split"] == "val"
    # the other datasets share the model file and schedule (the full parse of each is the experiment-config test's)
    sources = set()
    for path in EXPERIMENTS.glob("query2label-*.yaml"):
        raw = yaml.safe_load(path.read_text())
        assert raw["model"] == "../model/query2label.yaml" and raw["trainer"]["max_epochs"] == 80
        sources.add(raw["data"]["source"])
    assert sources == {"voc2007", "voc2012", "coco2014", "nuswide"}
