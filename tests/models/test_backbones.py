import logging

import pytest
import torch
import torchvision

from mlattack.models.backbones import build_backbone, cached_weights_file

LOGGER = "mlattack.models.backbones"


@pytest.fixture(autouse=True)
def empty_torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, so a developer's downloaded weights never change what these tests see."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A full torchvision resnet18 state_dict (fc.* included, which the trunk does not use), saved once."""
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(state, path)
    return path, state


def warnings_from(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_tiny_backbone_shape_size_and_no_warning(caplog):
    trunk, features = build_backbone("tiny")
    assert features == 256
    assert trunk(torch.rand(2, 3, 64, 64)).shape == (2, 256, 8, 8)
    assert 300_000 < sum(p.numel() for p in trunk.parameters()) < 600_000
    assert warnings_from(caplog) == []  # the demo trunk has no pretrained weights: nothing to warn about


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_backbone("vgg16")


def test_random_init_logs_exactly_one_warning(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    trunk, features = build_backbone("resnet18")
    assert features == 512 and trunk.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 512, 1, 1)
    warnings = warnings_from(caplog)
    assert len(warnings) == 1 and "RANDOM" in warnings[0].getMessage()


def assert_trunk_has(trunk, state):
    mismatched = [k for k, v in trunk.state_dict().items() if not torch.equal(v, state[k])]
    assert mismatched == []


def test_weights_file_with_full_torchvision_state_dict_is_loaded(resnet18_file, caplog):
    path, state = resnet18_file
    trunk, _ = build_backbone("resnet18", str(path))
    assert_trunk_has(trunk, state)
    assert warnings_from(caplog) == []


def test_weights_in_a_training_checkpoint_with_ddp_prefix_are_loaded(tmp_path):
    fresh, _ = build_backbone("tiny")
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in fresh.state_dict().items()}}, tmp_path / "ckpt.pt"
    )
    trunk, _ = build_backbone("tiny", tmp_path / "ckpt.pt")
    assert_trunk_has(trunk, fresh.state_dict())


def test_weights_in_the_torch_hub_cache_are_found_without_download(empty_torch_home, resnet18_file, caplog):
    assert cached_weights_file("resnet18") is None
    empty_torch_home.mkdir(parents=True)
    path, state = resnet18_file
    # the file name torchvision itself uses for ResNet18_Weights.IMAGENET1K_V1
    (empty_torch_home / "resnet18-f37072fd.pth").symlink_to(path)
    assert cached_weights_file("resnet18") == empty_torch_home / "resnet18-f37072fd.pth"
    trunk, _ = build_backbone("resnet18")
    assert_trunk_has(trunk, state)
    assert warnings_from(caplog) == []


def test_weights_of_another_architecture_are_refused_naming_the_file(tmp_path):
    torch.save(build_backbone("tiny")[0].state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match=r"tiny\.pth: weights do not fit backbone 'resnet18'"):
        build_backbone("resnet18", tmp_path / "tiny.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone("tiny", tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pth: not a loadable torch weights file"):
        build_backbone("tiny", tmp_path / "junk.pth")


def test_inception_trunk_at_small_size():
    trunk, features = build_backbone("inception_v3")
    assert features == 2048
    assert trunk.eval()(torch.rand(1, 3, 75, 75)).shape == (1, 2048, 1, 1)
    assert "Mixed_7c.branch_pool.conv.weight" in trunk.state_dict()
    assert not any(k.startswith(("AuxLogits", "fc")) for k in trunk.state_dict())
