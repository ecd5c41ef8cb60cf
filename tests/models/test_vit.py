"""ViT victim: timm trunk + multi-label head, weights from a file only, Jacobian, fit + registry."""

import inspect
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from mlattack.attacks.jacobian import label_jacobian
from mlattack.evaluation.fast import fast_attack_copy
from mlattack.models.vit import ViT
from tests.models.registry_round_trip import fit_register_and_reload

EXPERIMENTS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
SMALL = {
    "arch": "vit_tiny_patch16_224", "image_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4,
    "mlp_ratio": 2.0, "drop_path_rate": 0.0,
}  # fmt: skip


@pytest.fixture
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def small(num_classes: int = 5, **kw) -> ViT:
    torch.manual_seed(0)
    return ViT(num_classes, **(SMALL | kw)).eval()


def test_logits_contract_small_dims_and_normalisation(images):
    net = small()
    out = net(images)
    assert net.num_classes == 5 and out.shape == (3, 5) and out.dtype == torch.float32
    vit = net.vit
    assert (vit.embed_dim, len(vit.blocks), vit.patch_embed.patch_size) == (32, 2, (8, 8))
    assert vit.pos_embed.shape == (1, 1 + 16, 32) and vit.head.out_features == 5
    torch.testing.assert_close(out, vit((images - 0.5) / 0.5))  # timm's ViT preprocessing, inside the model
    assert net(torch.rand(1, 3, 48, 48)).shape == (1, 5)  # other sizes: interpolated position embeddings
    assert not any(block.attn.fused_attn for block in vit.blocks)  # vmap-friendly attention by default
    assert all(block.attn.fused_attn for block in small(fused_attention=True).vit.blocks)


def test_mean_pooling_reads_the_average_patch_token(images):
    net = small(global_pool="avg")
    x = (images - 0.5) / 0.5
    tokens = net.vit.forward_features(x)  # (N, 1 + patches, D): the class token first
    assert tokens.shape == (3, 17, 32)
    expected = net.vit.head(net.vit.fc_norm(tokens[:, 1:].mean(dim=1)))
    torch.testing.assert_close(net(images), expected)


def test_the_architecture_default_is_vit_b16():
    assert inspect.signature(ViT).parameters["arch"].default == "vit_base_patch16_224"
    # building ViT-B/16 itself takes seconds on CPU; its widths come from timm's registry, as for the small one
    import timm

    cfg = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, depth=1)
    assert (cfg.embed_dim, cfg.blocks[0].attn.num_heads, cfg.patch_embed.patch_size) == (768, 12, (16, 16))


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_classes", 0), ("arch", "resnet50"), ("arch", "vit_nonexistent"), ("image_size", 0), ("embed_dim", -8),
     ("drop_path_rate", 1.0), ("global_pool", "max")],
)  # fmt: skip
def test_bad_options_are_refused_naming_the_field(field, value):
    kw = SMALL | {field: value}
    num_classes = kw.pop("num_classes", 5)
    with pytest.raises(ValueError, match=field):
        ViT(num_classes, **kw)


def test_weights_file_loads_the_trunk_resamples_positions_and_keeps_the_new_head(tmp_path, images):
    source = small(num_classes=7, image_size=64)  # another head and another position grid (8 x 8)
    torch.save(source.vit.state_dict(), tmp_path / "vit.pth")
    net = small(weights=str(tmp_path / "vit.pth"))
    for k, v in net.vit.state_dict().items():
        if k.startswith("head.") or k == "pos_embed":
            continue
        assert torch.equal(v, source.vit.state_dict()[k]), k
    assert net.vit.pos_embed.shape == (1, 17, 32) and net.vit.head.out_features == 5
    # the class-token embedding is kept as it is; the patch grid is resampled, not left random
    torch.testing.assert_close(net.vit.pos_embed[:, :1], source.vit.pos_embed[:, :1])
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in source.vit.state_dict().items()}, tmp_path / "vit.safetensors")
    from_st = small(weights=str(tmp_path / "vit.safetensors"))
    torch.testing.assert_close(from_st(images), net(images))


def test_bad_weights_files_are_refused(tmp_path):
    torch.save({"blocks.0.norm1.weight": torch.zeros(32)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth: weights do not fit ViT"):
        small(weights=str(tmp_path / "partial.pth"))
    torch.save({"w": torch.zeros(1), "step": 3}, tmp_path / "mixed.pth")
    with pytest.raises(ValueError, match="expected a state_dict"):
        small(weights=str(tmp_path / "mixed.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth: not a loadable weights file"):
        small(weights=str(tmp_path / "junk.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        small(weights=str(tmp_path / "missing.pth"))


def test_parameter_groups_put_the_head_at_the_full_rate():
    net = small()
    groups = net.parameter_groups(1e-3, backbone_lr_scale=0.1)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", pytest.approx(1e-4)), ("head", 1e-3)]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters())


def test_label_jacobian_equals_per_label_backward_passes(images):
    net = small()
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
    fit_register_and_reload(
        tmp_path,
        monkeypatch,
        "demo-vit.yaml",
        "vit-synthetic",
        extra=("--model.net.init_args.image_size", "32"),
    )


def test_experiment_configs_share_the_vit_b16_model_file():
    sources = set()
    for path in EXPERIMENTS.glob("vit-*.yaml"):
        raw = yaml.safe_load(path.read_text())
        assert raw["model"] == "../model/vit.yaml" and raw["trainer"]["max_epochs"] == 80
        assert raw["data"]["image_size"] == 448
        sources.add(raw["data"]["source"])
    assert sources == {"voc2007", "voc2012", "coco2014", "nuswide"}
    model = yaml.safe_load((EXPERIMENTS.parent / "model" / "vit.yaml").read_text())
    assert model["net"]["init_args"]["arch"] == "vit_base_patch16_224"
    assert model["net"]["init_args"]["image_size"] == 448
