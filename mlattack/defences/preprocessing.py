"""Input-transformation defences (Xu et al. 2018 feature squeezing; Guo et al. 2018 JPEG): a preprocessing step
between the image and the network.

Each step has two faces:

- :meth:`Preprocessing.transform`: the step itself, exactly, without gradient. This is what the defended model
  computes on every image, attacked or judged.
- :meth:`Preprocessing.forward`: the same values, with the gradient autograd gives for them: zero for rounding
  (bit depth) and for JPEG (a codec has no derivative), the routing to the chosen pixel for the median. A plain
  attack sees this gradient; an adaptive one replaces it by BPDA (:mod:`mlattack.defences.wrapper`).

JPEG uses ``torchvision.io.encode_jpeg`` / ``decode_jpeg``: libjpeg(-turbo) on uint8 tensors, the whole batch in one
call, no detour through PIL images, and the quality is an argument per call (per sample for random quality). The
median filter is our own (``unfold`` + ``median``, ten lines, any device): the kept libraries have none for tensors
(scipy's ``ndimage.median_filter`` is numpy-only; it serves as the tests' oracle).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.io import decode_jpeg, encode_jpeg


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> the nearest 8-bit values."""
    return (x.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8)


class Preprocessing(nn.Module):
    """Base class: ``transform`` is the exact step, ``forward`` its plain-gradient version (module docstring)."""

    #: draws random settings on each call (then an adaptive attack averages over draws: EOT)
    randomised: bool = False

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the codec's output as a constant of x: the value is exact, the gradient is zero (kept in the graph)
        return x * 0.0 + self.transform(x).detach()

    def label(self) -> str:
        """A short name for tables (``jpeg75``, ``bitdepth3``)."""
        raise NotImplementedError

    def settings(self) -> dict[str, object]:
        """The public settings, for run params and keys."""
        public = {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_") and k not in ("training", "randomised")
        }
        return {"defence": type(self).__name__, "label": self.label(), **public}


class JPEG(Preprocessing):
    """JPEG re-compression at ``quality`` (1-100), or at a quality drawn per sample and call, uniformly from the
    integers in ``[quality, max_quality]`` when ``max_quality`` is set (a randomised defence).

    Images are rounded to 8 bits, encoded and decoded on the CPU (torchvision's CPU codec) and returned on their
    device as floats in [0, 1].
    """

    def __init__(self, quality: int = 75, max_quality: int | None = None) -> None:
        super().__init__()
        top = quality if max_quality is None else max_quality
        if not 1 <= int(quality) <= int(top) <= 100:
            raise ValueError(
                f"JPEG quality must satisfy 1 <= quality <= max_quality <= 100, got {quality}, {top}"
            )
        self.quality, self.max_quality = int(quality), None if max_quality is None else int(max_quality)
        self.randomised = max_quality is not None and int(max_quality) > int(quality)

    def label(self) -> str:
        return f"jpeg{self.quality}" + (f"-{self.max_quality}" if self.randomised else "")

    def qualities(self, n: int) -> list[int]:
        if not self.randomised:
            return [self.quality] * n
        return torch.randint(self.quality, self.max_quality + 1, (n,)).tolist()

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        images = list(to_uint8(x).cpu())
        coded = [
            encode_jpeg(img, quality=q) for img, q in zip(images, self.qualities(len(images)), strict=True)
        ]
        out = torch.stack(decode_jpeg(coded))
        return out.to(device=x.device, dtype=torch.float32).div_(255.0).to(x.dtype)


class BitDepth(Preprocessing):
    """Colour bit-depth reduction (feature squeezing): each channel rounded to ``bits`` bits,
    ``round(x · (2^bits − 1)) / (2^bits − 1)``."""

    def __init__(self, bits: int = 3) -> None:
        super().__init__()
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"BitDepth bits must be in 1..8, got {bits}")
        self.bits = int(bits)

    def label(self) -> str:
        return f"bitdepth{self.bits}"

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = float(2**self.bits - 1)
        return torch.round(x * levels) / levels  # round's autograd gradient is zero: what a plain attack sees


class MedianSmoothing(Preprocessing):
    """Median filter over ``kernel_size`` × ``kernel_size`` windows per channel (odd size), borders mirrored
    (``reflect`` padding, scipy's ``mode="mirror"``)."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"MedianSmoothing kernel_size must be odd and >= 1, got {kernel_size}")
        self.kernel_size = int(kernel_size)

    def label(self) -> str:
        return f"median{self.kernel_size}"

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, (n, c, h, w) = self.kernel_size, x.shape
        pad = k // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
        windows = F.unfold(padded.reshape(n * c, 1, h + 2 * pad, w + 2 * pad), k)  # (N·C, k², H·W)
        return windows.median(dim=1).values.reshape(
            n, c, h, w
        )  # gradient: to the median pixel of each window
