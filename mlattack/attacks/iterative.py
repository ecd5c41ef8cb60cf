"""The shared core of the gradient attacks (FGSM, FGM, BIM, PGD, MI-FGSM, SLIDE), after AdverTorch's
``perturb_iterative``: one loop, parameterised by a step rule and a projection.

Each step, for the rows still active::

    loss, grad, logits = attack.loss_and_grad(model, x + delta, target)    # one forward + one input backward
    update, state = step(grad, state)                                      # descent direction, already scaled
    delta = project(delta + update)                                        # back into the eps ball
    delta = clamp(x + delta, 0, 1) - x                                     # back into the pixel range

and the result is ``clamp(x + delta, 0, 1)``. The arithmetic follows AdverTorch (multiply by the reciprocal norm,
norms as ``|x|^p`` summed then ``^(1/p)``, the same clamp order) so that the images equal AdverTorch's up to
floating-point error. The loss is *descended* directly, which equals AdverTorch's ``targeted=True``.

Early stopping (``attack.early_stop``): the logits of each step's forward pass tell whether the image *before*
the step already shows the target; such a sample is frozen at that image (its first success), its diagnostics are
recorded, and it is dropped from every later forward pass (``index_select`` of the active rows). That costs one
host sync per step, none per sample. One final forward pass gives the diagnostics of the last images.

Building blocks for other attacks:
    - step rules ``(grad, state) -> (update, state)``: :func:`sign_step`, :func:`l2_step`, :func:`momentum_step`,
      :func:`sparse_l1_step`. ``state`` is a per-sample tensor (or ``None``) that follows the active rows.
    - projections ``delta -> delta``: :func:`linf_box`, :func:`l2_ball`, :func:`l1_ball`.
    - random starts: :func:`uniform_linf_start`, :func:`laplace_l1_start`.
    - :class:`IterativePlan`: an attack's step rule, projection, start and budget in one value, so that other
      loops (the continuous scheduler, :mod:`mlattack.attacks.continuous`) can drive the same attack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mlattack.attacks.base import Attack, AttackResult

StepFn = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]
ProjectFn = Callable[[torch.Tensor], torch.Tensor]
StartFn = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


@dataclass(frozen=True)
class IterativePlan:
    """One iterative gradient attack as data: ``nb_iter`` steps of ``step`` + ``project`` from ``start``.

    ``start(images, generator)`` draws a random initial perturbation (``None``: zeros); ``momentum`` gives the
    step rule a zero per-sample state. Every field acts per sample, which is what lets a scheduler run samples
    that entered the batch at different times.
    """

    nb_iter: int
    step: StepFn
    project: ProjectFn | None = None
    start: StartFn | None = None
    momentum: bool = False


def pnorm(x: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample p-norm (N,), computed as AdverTorch does (``|x|^p`` summed, then ``^(1/p)``)."""
    return x.abs().pow(p).flatten(1).sum(dim=1).pow(1.0 / p)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def normalize(x: torch.Tensor, p: float, small: float = 1e-6) -> torch.Tensor:
    """x / max(‖x‖_p, small) per sample (AdverTorch's ``normalize_by_pnorm``)."""
    norm = pnorm(x, p).clamp_min(small)
    return x * _per_sample(1.0 / norm, x)


# -- step rules ----------------------------------------------------------------------------------------------
def sign_step(eps_iter: float) -> StepFn:
    """L∞ steepest descent: ``-eps_iter * sign(grad)`` (FGSM, BIM, PGD)."""
    return lambda grad, state: (-(grad.sign() * eps_iter), state)


def l2_step(eps_iter: float) -> StepFn:
    """L2 steepest descent: ``-eps_iter * grad / ‖grad‖₂`` (FGM)."""
    return lambda grad, state: (-(normalize(grad, 2) * eps_iter), state)


def momentum_step(eps_iter: float, decay_factor: float) -> StepFn:
    """MI-FGSM: ``g ← decay·g + grad/‖grad‖₁``, step ``-eps_iter * sign(g)``. Start with ``state = zeros``."""

    def step(grad: torch.Tensor, g: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert g is not None, "momentum_step needs state_init=torch.zeros_like(images)"
        g = decay_factor * g + normalize(grad, 1)
        return -(g.sign() * eps_iter), g

    return step


def sparse_l1_step(eps_iter: float, l1_sparsity: float) -> StepFn:
    """Sparse L1 descent (SLIDE, Tramèr & Boneh 2019, as in AdverTorch): move only the top ``1 - l1_sparsity``
    fraction of coordinates by |grad|, each by the same amount, the step's L1 norm being ``eps_iter``."""

    def step(grad: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        flat = grad.flatten(1)
        # AdverTorch rounds like numpy (half to even), as Python's round does; at least one coordinate moves
        k = max(1, round((1.0 - l1_sparsity) * flat.shape[1]))
        vals, idx = flat.abs().topk(k, dim=1)
        chosen = torch.zeros_like(flat).scatter_(1, idx, vals) > 0  # zero gradients are never "chosen"
        direction = normalize(grad.sign() * chosen.view_as(grad).float(), 1)
        return -(direction * eps_iter), state

    return step


# -- projections -------------------------------------------------------------------------------------------
def linf_box(eps: float) -> ProjectFn:
    return lambda delta: delta.clamp(-eps, eps)


def l2_ball(eps: float) -> ProjectFn:
    """Scale down to L2 norm ``eps`` (AdverTorch's ``clamp_by_pnorm``; it applies it after the pixel clamp)."""
    return lambda delta: delta * _per_sample(torch.clamp(eps / pnorm(delta, 2), max=1.0), delta)


def l1_ball(eps: float) -> ProjectFn:
    """Euclidean projection onto the L1 ball (Duchi et al. 2008), as AdverTorch's ``batch_l1_proj``.

    Computed for every row and kept only where the norm exceeds ``eps`` (no host sync, same values)."""

    def project(delta: torch.Tensor) -> torch.Tensor:
        flat = delta.flatten(1)
        mu = flat.abs().sort(dim=1, descending=True).values
        ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
        st = (mu.cumsum(dim=1) - eps) / ranks
        # rho = length of the leading run where mu > st (robust to rounding, as in the reference)
        rho = (mu - st > 0).int().cumprod(dim=1).sum(dim=1) - 1
        theta = st.gather(1, rho.clamp_min(0).unsqueeze(1))
        proj = torch.relu(flat.abs() - theta) * flat.sign()
        outside = flat.abs().sum(dim=1, keepdim=True) > eps
        return torch.where(outside, proj, flat).view_as(delta)

    return project


# -- random starts ------------------------------------------------------------------------------------------
def _uniform(shape: torch.Size, low: float, high: float, like: torch.Tensor, gen: torch.Generator | None):
    device = gen.device if gen is not None else like.device
    return (
        torch.empty(shape, dtype=like.dtype, device=device).uniform_(low, high, generator=gen).to(like.device)
    )


def uniform_linf_start(
    images: torch.Tensor, eps: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """AdverTorch's L∞ ``rand_init_delta``: uniform in the eps box, then clipped to the pixel range.
    Without a generator it draws from the global RNG exactly like AdverTorch."""
    delta = _uniform(images.shape, -1.0, 1.0, images, generator) * eps
    return (images + delta).clamp(0.0, 1.0) - images


def laplace_l1_start(
    images: torch.Tensor, eps: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """AdverTorch's L1 ``rand_init_delta``: a Laplace direction, L1-normalised, times one radius ~ U(0, eps)
    shared by the batch (as in AdverTorch), then clipped to the pixel range."""
    u = _uniform(images.shape, torch.finfo(images.dtype).eps - 1.0, 1.0, images, generator)
    laplace = -(u.sign() * torch.log1p(-u.abs()))  # Laplace(0, 1) by inversion, as torch.distributions does
    ray = _uniform(torch.Size(), 0.0, 1.0, images, generator) * eps
    delta = normalize(laplace, 1) * ray
    return (images + delta).clamp(0.0, 1.0) - images


# -- the loop ---------------------------------------------------------------------------------------------------
def run_iterative(
    attack: Attack,
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    nb_iter: int,
    step: StepFn,
    project: ProjectFn | None = None,
    delta_init: torch.Tensor | None = None,
    state_init: torch.Tensor | None = None,
) -> AttackResult:
    """Run ``nb_iter`` steps of ``step`` + ``project`` + pixel clip from ``delta_init`` (default zeros).

    Uses ``attack.loss_and_grad`` / ``attack.forward`` / ``attack.loss_fn`` / ``attack.reached`` and honours
    ``attack.early_stop``. ``iterations`` counts the steps that produced each returned image.
    """
    n = images.shape[0]
    x, t = images, target
    delta = torch.zeros_like(images) if delta_init is None else delta_init.detach().clone()
    state = state_init
    adv = torch.empty_like(images)
    iterations = torch.full((n,), nb_iter, dtype=torch.long, device=images.device)
    reached = torch.zeros(n, dtype=torch.bool, device=images.device)
    final_loss = torch.zeros(n, dtype=torch.float32, device=images.device)
    grad_finite = torch.ones(n, dtype=torch.bool, device=images.device)
    active = torch.arange(n, device=images.device)

    for i in range(nb_iter):
        loss, grad, logits = attack.loss_and_grad(model, x + delta, t)
        # sign(NaN) = 0 would silently freeze a sample: record it (no host sync) so the caller can fail it
        grad_finite[active] &= torch.isfinite(grad.flatten(1)).all(1)
        if attack.early_stop:
            done = attack.reached(logits, t)
            if bool(done.any()):  # the one host sync per step
                rows = active[done]
                adv[rows] = (x[done] + delta[done]).clamp(0.0, 1.0)
                iterations[rows] = i
                reached[rows] = True
                final_loss[rows] = loss[done]
                keep = (~done).nonzero().squeeze(1)
                active = active[keep]
                if active.numel() == 0:
                    break
                x, t, delta, grad = (v.index_select(0, keep) for v in (x, t, delta, grad))
                state = state.index_select(0, keep) if state is not None else None
        update, state = step(grad, state)
        delta = delta + update
        if project is not None:
            delta = project(delta)
        delta = (x + delta).clamp(0.0, 1.0) - x

    if active.numel() > 0 and not attack._diagnostics:  # the caller evaluates the images itself
        adv[active] = (x + delta).clamp(0.0, 1.0)
        final_loss[active] = float("nan")
    elif active.numel() > 0:
        with torch.no_grad():
            final = x + delta
            logits = attack.forward(model, final)
            adv[active] = final.clamp(0.0, 1.0)
            reached[active] = attack.reached(logits, t)
            final_loss[active] = attack.loss_fn(logits, t).float()
    return AttackResult(
        adv=adv, iterations=iterations, reached=reached, loss=final_loss, grad_finite=grad_finite
    )


def run_plan(
    attack: Attack,
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    plan: IterativePlan,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """:func:`run_iterative` on a plan: the random start (if any) is drawn for the whole batch from
    ``generator`` (``None``: the global RNG, as AdverTorch)."""
    delta = plan.start(images, generator) if plan.start is not None else None
    state = torch.zeros_like(images) if plan.momentum else None
    return run_iterative(attack, model, images, target, plan.nb_iter, plan.step, plan.project, delta, state)
