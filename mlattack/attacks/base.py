"""The small base class every attack derives from (one attack per file, like torchattacks).

Contract: ``attack(model, images, target)`` with images (N, 3, H, W) float in [0, 1] and target (N, C) multi-hot
returns adversarial images of the same shape, detached, on the images' device. ``attack.run(...)`` returns an
:class:`AttackResult` with per-sample diagnostics as well. The model is any module that returns logits; during the
call it is in eval mode with parameter gradients off (gradients are taken w.r.t. the input only), and both are
restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mlattack.attacks.losses import AttackLoss, shows_target, summed_bce

AUTOCAST_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


@dataclass
class AttackResult:
    """Adversarial images plus per-sample diagnostics (all tensors detached, on the input device)."""

    adv: torch.Tensor  # (N, 3, H, W) in [0, 1]
    iterations: torch.Tensor  # (N,) long: gradient steps (or solver iterations) spent on each sample
    reached: torch.Tensor  # (N,) bool: final prediction equals the target on every label
    loss: torch.Tensor  # (N,) float: final value of the attack's loss
    #: (N,) bool: every input gradient the attack took for the sample was finite; None when the attack does not
    #: track it (then a caller that cares checks the gradient at the final image itself)
    grad_finite: torch.Tensor | None = None


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the duration; the previous state is restored afterwards, module by
    module: ``model.train(flag)`` would give every submodule the outer module's flag, and a wrapper made for the
    attack (a defence's BPDA model, born in train mode) would leave the network it wraps in train mode, so that
    judging and later attacks ran BatchNorm on batch statistics and updated its running ones."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def keep_best(
    idx: torch.Tensor,
    adv: torch.Tensor,
    logits: torch.Tensor,
    dist: torch.Tensor,
    target: torch.Tensor,
    best_adv: torch.Tensor,
    best_logits: torch.Tensor,
    best_score: torch.Tensor,
    best_dist: torch.Tensor,
) -> torch.Tensor:
    """Best-so-far rule of ML-CW, ML-DP and MLA-LP: replace rows ``idx`` of the best tensors where ``adv`` shows
    more target labels, or as many at a smaller distance ``dist``. ``target`` is the full (N, C) target; returns the
    score (target labels matched) of ``adv``."""
    score = ((logits >= 0) == (target[idx] > 0.5)).sum(1)
    better = (score > best_score[idx]) | ((score == best_score[idx]) & (dist < best_dist[idx]))
    bi = idx[better]
    best_adv[bi], best_logits[bi], best_score[bi], best_dist[bi] = (
        adv[better],
        logits[better],
        score[better],
        dist[better],
    )
    return score


VARIANTS = ("reference", "corrected")


def check_variant(variant: str) -> str:
    """Validate ``variant``: "reference" (the study's code, quirks included) or "corrected" (the algorithm without the code's accidents)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    return variant


def quirk(name: str, value: bool | None, variant: str) -> bool:
    """Resolve one reference quirk switch: ``None`` follows the variant (on for "reference", off for "corrected");
    an explicit bool switches that quirk alone, which is what the ablations do."""
    if value is None:
        return variant == "reference"
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true, false or null (follow variant), got {value!r}")
    return value


def check_count(name: str, value: int) -> int:
    """Validate a count (iterations, search steps, restarts): an integer >= 1, an integral float such as 1e3
    accepted; the message names the argument."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if not ok or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    """Validate a hyperparameter: finite and > 0 (or >= 0); the message names the argument."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


#: a fast-mode scheduler, called as ``scheduler(attack, model, images, target, keys, seed, slots)``: attacks every
#: sample with at most ``slots`` in flight, each sample's random start drawn from ``(seed, key)``
FastScheduler = Callable[..., "AttackResult"]


class Attack(ABC):
    """Base class: hyperparameters in ``__init__``, the algorithm in :meth:`perturb`.

    Arguments shared by all attacks:
        loss_fn: per-sample loss ``(logits, target) -> (N,)`` the attack *descends* (default: the study's summed
            BCE on clamped sigmoid outputs, see :func:`mlattack.attacks.losses.summed_bce`).
        early_stop: stop updating a sample once it shows the target on every label (its image is frozen at the
            first success) and drop it from the active batch. Off by default: the study ran every step.
        autocast: ``None`` (fp32), ``"bf16"`` or ``"fp16"``: dtype of the model's forward pass; perturbations and
            losses stay in fp32.
    """

    #: the distance the attack bounds or minimises ("linf", "l2" or "l1"; ``None``: it does not say), logged as
    #: ``attack.norm``
    norm: str | None = None
    #: attacks whose inner math stays in fp32 whatever ``autocast`` says
    precision_sensitive: bool = False
    #: whether the current call wants diagnostics of the final images (see :meth:`run`)
    _diagnostics: bool = True

    def __init__(
        self, loss_fn: AttackLoss | None = None, early_stop: bool = False, autocast: str | None = None
    ) -> None:
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {sorted(AUTOCAST_DTYPES)} or None, got {autocast!r}")
        self.loss_fn: AttackLoss = loss_fn if loss_fn is not None else summed_bce
        self.early_stop = bool(early_stop)
        self.autocast = autocast

    # -- public API -------------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.run(model, images, target, diagnostics=False).adv

    def run(
        self, model: nn.Module, images: torch.Tensor, target: torch.Tensor, diagnostics: bool = True
    ) -> AttackResult:
        """Attack a batch and return images plus per-sample diagnostics.

        ``diagnostics=False`` lets the gradient attacks skip the forward pass on their final images (one pass per
        call: a third of the cost of FGSM) when the caller evaluates the images itself; ``reached`` and ``loss``
        are then only filled for samples that stopped early.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if target.ndim != 2 or target.shape[0] != images.shape[0]:
            raise ValueError(
                f"target must be (N, num_labels) with N={images.shape[0]}, got {tuple(target.shape)}"
            )
        images = images.detach().float()
        target = target.detach().to(device=images.device, dtype=torch.float32)
        self._diagnostics = diagnostics
        try:
            with frozen_eval(model):
                res = self.perturb(model, images, target)
        finally:
            self._diagnostics = True
        return AttackResult(
            adv=res.adv.detach(),
            iterations=res.iterations.detach(),
            reached=res.reached.detach(),
            loss=res.loss.detach(),
            grad_finite=None if res.grad_finite is None else res.grad_finite.detach(),
        )

    @abstractmethod
    def perturb(self, model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> AttackResult:
        """The algorithm. ``images`` are detached fp32 in [0, 1]; the model is frozen and in eval mode."""

    def fast_scheduler(self) -> FastScheduler | None:
        """The scheduler that drives this attack continuously in fast mode (early stop frees a slot that the next
        sample fills), or None: the attack runs on the study's groups one by one. An attack with its own
        per-sample scheduler says so here; :class:`~mlattack.attacks.iterative_attack.IterativeAttack` does."""
        return None

    # -- helpers for subclasses -------------------------------------------------------------------------------
    def forward(self, model: nn.Module, x: torch.Tensor, fp32: bool = False) -> torch.Tensor:
        """Logits as fp32, with the model's forward under autocast when configured (and not ``fp32``)."""
        if self.autocast is None or fp32 or self.precision_sensitive:
            return model(x).float()
        with torch.autocast(device_type=x.device.type, dtype=AUTOCAST_DTYPES[self.autocast]):
            return model(x).float()

    def loss_and_grad(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample loss (N,), its gradient w.r.t. ``x`` only, and the logits (all detached)."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.forward(model, x)
            loss = self.loss_fn(logits, target)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach()

    @staticmethod
    def reached(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return shows_target(logits, target)

    def hyperparameters(self) -> dict[str, object]:
        """Public scalar settings, for logging (e.g. as MLflow params)."""
        out: dict[str, object] = {"attack": type(self).__name__}
        for k, v in vars(self).items():
            if k.startswith("_") or k == "loss_fn":
                continue
            if isinstance(v, (int, float, str, bool)) or v is None:
                out[k] = v
        out["loss_fn"] = getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items() if k != "attack")
        return f"{type(self).__name__}({args})"
