"""Vision transformer victim: a timm ``VisionTransformer`` trunk with a C-way linear head on its class token.

The architecture is timm's (any ``vit_*`` name it registers), built with ``pretrained=False`` so nothing is
downloaded; widths can be overridden to get a model that trains on two CPU cores. ImageNet weights, when wanted,
come from a file (``weights``: a timm state_dict of the same architecture, ``.pth`` or ``.safetensors``); its
position embeddings are resampled when the file was trained at another resolution.

Attention uses timm's explicit softmax path (``fused_attention=False``): ``torch.func.vmap`` batches it, so the
per-label Jacobian of ML-DP / MLA-LP is one batched backward pass, whereas the fused CPU kernel's backward has no
batching rule and falls back to a per-label loop with a warning.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

#: timm's ViT preprocessing: (x − 0.5)/0.5
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)


def _optional_positive(name: str, value: int | float | None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number or null, got {value!r}")
    return {name: value}


class ViT(nn.Module):
    """timm ViT (class-token or mean pooling, final LayerNorm) → Linear(embed_dim, C).

    Arguments:
        num_classes: C.
        arch: a timm ViT name (``vit_base_patch16_224`` is ViT-B/16; ``vit_tiny_patch16_224`` ViT-Ti/16).
        image_size: training resolution (sets the position-embedding grid; other sizes are interpolated at run
            time, so the attack may use another resolution, as the study did).
        patch_size, embed_dim, depth, num_heads, mlp_ratio: override the architecture's values (null: keep).
        global_pool: what the head reads: ``token`` (the class token, ViT's default) or ``avg`` (the mean of the
            patch tokens, which trains faster from scratch on small data).
        drop_rate: dropout before the head; drop_path_rate: stochastic depth (0.1 is timm's ViT-B recipe).
        weights: a timm state_dict of ``arch`` (``head.*`` entries are ignored: the head is new), or null.
        fused_attention: use the fused attention kernel (faster forward on GPU; see the module docstring).
        dataset: name of the training data source (recorded only).

    Shape: (N, 3, H, W) in [0, 1], H and W multiples of the patch size -> (N, C) logits.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "vit_base_patch16_224",
        image_size: int = 224,
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float | None = None,
        global_pool: str = "token",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        weights: str | None = None,
        fused_attention: bool = False,
        dataset: str | None = None,
    ) -> None:
        super().__init__()
        import timm
        from timm.models.vision_transformer import VisionTransformer

        if int(num_classes) != num_classes or int(num_classes) <= 0:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not timm.is_model(arch) or not arch.startswith("vit_"):
            raise ValueError(f"arch must be a timm vision transformer name (vit_*), got {arch!r}")
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if int(image_size) != image_size or int(image_size) <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        for name, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        overrides = {}
        for name, value in (("patch_size", patch_size), ("embed_dim", embed_dim), ("depth", depth)):
            overrides |= _optional_positive(name, value)
        overrides |= _optional_positive("num_heads", num_heads) | _optional_positive("mlp_ratio", mlp_ratio)
        self.num_classes, self.dataset, self.arch = int(num_classes), dataset, arch
        self.vit = timm.create_model(
            arch,
            pretrained=False,
            num_classes=self.num_classes,
            img_size=int(image_size),
            dynamic_img_size=True,
            global_pool=global_pool,
            drop_rate=float(drop_rate),
            drop_path_rate=float(drop_path_rate),
            **overrides,
        )
        if not isinstance(self.vit, VisionTransformer):
            raise ValueError(f"arch {arch!r} is not a timm VisionTransformer ({type(self.vit).__name__})")
        for module in self.vit.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = bool(fused_attention)
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            self.load_trunk(weights)

    def load_trunk(self, path: str | Path) -> None:
        """Load a timm state_dict of the same architecture into everything but the head (safe loaders only)."""
        from timm.layers import resample_abs_pos_embed

        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"ViT weights: file {path} does not exist")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch and safetensors raise several types for corrupt or non-tensor files
            raise ValueError(f"{path}: not a loadable weights file ({e})") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: expected a state_dict (a mapping of parameter names to tensors)")
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        own = self.vit.state_dict()
        if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
            prefix = self.vit.num_prefix_tokens
            side = math.isqrt(own["pos_embed"].shape[1] - prefix)
            state["pos_embed"] = resample_abs_pos_embed(
                state["pos_embed"], [side, side], num_prefix_tokens=prefix
            )
        missing = sorted(k for k in own if not k.startswith("head.") and k not in state)
        unexpected = sorted(k for k in state if k not in own)
        if missing or unexpected:
            raise ValueError(
                f"{path}: weights do not fit ViT {self.arch!r}: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        try:
            self.vit.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"{path}: weights do not fit ViT {self.arch!r}: {e}") from e

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit((images - self.mean) / self.std)

    def parameter_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict]:
        """Optimiser groups: the transformer at lr × backbone_lr_scale, the head at lr."""
        head = {id(p) for p in self.vit.head.parameters()}
        groups = [
            {"name": "backbone", "params": [p for p in self.vit.parameters() if id(p) not in head]},
            {"name": "head", "params": list(self.vit.head.parameters())},
        ]
        groups[0]["lr"], groups[1]["lr"] = lr * backbone_lr_scale, lr
        return [g for g in groups if g["params"]]
