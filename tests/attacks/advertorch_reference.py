"""A minimal transcription of AdverTorch 0.2.3's gradient attacks, used only as a test oracle.

advertorch==0.2.3 does not import with torch 2.x (``advertorch/attacks/fast_adaptive_boundary.py`` imports
``torch.autograd.gradcheck.zero_gradients``, which was removed), so the arithmetic of the functions below is
copied from its source (https://github.com/BorealisAI/advertorch, tag v0.2.3, BSD-style licence, © Royal Bank of
Canada) with ``.data`` / ``nn.Parameter`` juggling replaced by plain tensors and ``np.inf`` by ``float("inf")``.
Each function names the file it comes from. ``loss_fn`` returns a scalar (like AdverTorch's reduced losses);
``targeted=True`` negates it, i.e. descends it.
"""

from __future__ import annotations

import torch
from torch.distributions import laplace, uniform

INF = float("inf")


# --- advertorch/utils.py -----------------------------------------------------------------------------------
def clamp(x, min=None, max=None):  # noqa: A002 - scalar branch of advertorch.utils.clamp
    if min is not None:
        x = torch.clamp(x, min=min)
    if max is not None:
        x = torch.clamp(x, max=max)
    return x


def batch_multiply(float_or_vector, tensor):
    if isinstance(float_or_vector, torch.Tensor):
        return (tensor.transpose(0, -1) * float_or_vector).transpose(0, -1).contiguous()
    return tensor * float_or_vector


def batch_clamp(value, tensor):
    return clamp(tensor, -value, value)


def _get_norm_batch(x, p):
    batch_size = x.size(0)
    return x.abs().pow(p).view(batch_size, -1).sum(dim=1).pow(1.0 / p)


def _thresh_by_magnitude(theta, x):
    return torch.relu(torch.abs(x) - theta) * x.sign()


def batch_l1_proj_flat(x, z=1):
    v = torch.abs(x).sum(dim=1)
    indexes_b = torch.nonzero(v > z).view(-1)
    x_b = x[indexes_b]
    if x_b.size(0) == 0:
        return x
    view = x_b
    view_size = view.size(1)
    mu = view.abs().sort(1, descending=True)[0]
    vv = torch.arange(view_size).float().to(x.device)
    st = (mu.cumsum(1) - z) / (vv + 1)
    u = (mu - st) > 0
    rho = (~u).cumsum(dim=1).eq(0).sum(1) - 1
    theta = st.gather(1, rho.unsqueeze(1))
    proj_x_b = _thresh_by_magnitude(theta, x_b)
    proj_x = x.detach().clone()
    proj_x[indexes_b] = proj_x_b
    return proj_x


def batch_l1_proj(x, eps):
    batch_size = x.size(0)
    return batch_l1_proj_flat(x.view(batch_size, -1), z=eps).view_as(x)


def clamp_by_pnorm(x, p, r):
    norm = _get_norm_batch(x, p)
    factor = torch.min(r / norm, torch.ones_like(norm))
    return batch_multiply(factor, x)


def normalize_by_pnorm(x, p=2, small_constant=1e-6):
    norm = _get_norm_batch(x, p)
    norm = torch.max(norm, torch.ones_like(norm) * small_constant)
    return batch_multiply(1.0 / norm, x)


# --- advertorch/attacks/utils.py: rand_init_delta ------------------------------------------------------------
def rand_init_delta(delta, x, ord, eps, clip_min, clip_max):
    if ord == INF:
        delta = delta.uniform_(-1, 1)
        delta = batch_multiply(eps, delta)
    elif ord == 1:
        ini = laplace.Laplace(loc=delta.new_tensor(0), scale=delta.new_tensor(1))
        delta = ini.sample(delta.shape)
        delta = normalize_by_pnorm(delta, p=1)
        ray = uniform.Uniform(0, eps).sample()
        delta = delta * ray
        delta = clamp(x + delta, clip_min, clip_max) - x
    else:
        raise NotImplementedError(ord)
    return clamp(x + delta, min=clip_min, max=clip_max) - x


# --- advertorch/attacks/one_step_gradient.py -------------------------------------------------------------------
def _input_grad(predict, loss_fn, x, y, targeted):
    x = x.detach().clone().requires_grad_()
    loss = loss_fn(predict(x), y)
    if targeted:
        loss = -loss
    loss.backward()
    return x, x.grad.detach()


def gradient_sign_attack(predict, loss_fn, x, y, eps, targeted=True, clip_min=0.0, clip_max=1.0):
    """GradientSignAttack.perturb"""
    xadv, grad = _input_grad(predict, loss_fn, x, y, targeted)
    xadv = xadv + batch_multiply(eps, grad.sign())
    return clamp(xadv, clip_min, clip_max).detach()


def gradient_attack(predict, loss_fn, x, y, eps, targeted=True, clip_min=0.0, clip_max=1.0):
    """GradientAttack.perturb"""
    xadv, grad = _input_grad(predict, loss_fn, x, y, targeted)
    xadv = xadv + batch_multiply(eps, normalize_by_pnorm(grad))
    return clamp(xadv, clip_min, clip_max).detach()


# --- advertorch/attacks/iterative_projected_gradient.py --------------------------------------------------------
def perturb_iterative(
    xvar, yvar, predict, nb_iter, eps, eps_iter, loss_fn, delta_init=None, minimize=False, ord=INF,
    clip_min=0.0, clip_max=1.0, l1_sparsity=None,
):  # fmt: skip
    delta = torch.zeros_like(xvar) if delta_init is None else delta_init.detach().clone()
    for _ in range(nb_iter):
        delta.requires_grad_()
        loss = loss_fn(predict(xvar + delta), yvar)
        if minimize:
            loss = -loss
        loss.backward()
        grad = delta.grad.detach()
        delta = delta.detach()
        if ord == INF:
            delta = delta + batch_multiply(eps_iter, grad.sign())
            delta = batch_clamp(eps, delta)
            delta = clamp(xvar + delta, clip_min, clip_max) - xvar
        elif ord == 2:
            delta = delta + batch_multiply(eps_iter, normalize_by_pnorm(grad))
            delta = clamp(xvar + delta, clip_min, clip_max) - xvar
            if eps is not None:
                delta = clamp_by_pnorm(delta, ord, eps)
        elif ord == 1:
            abs_grad = torch.abs(grad)
            batch_size = grad.size(0)
            view = abs_grad.view(batch_size, -1)
            view_size = view.size(1)
            if l1_sparsity is None:
                vals, idx = view.topk(1)
            else:
                vals, idx = view.topk(int(round((1 - l1_sparsity) * view_size)))
            out = torch.zeros_like(view).scatter_(1, idx, vals).view_as(grad)
            grad = grad.sign() * (out > 0).float()
            grad = normalize_by_pnorm(grad, p=1)
            delta = delta + batch_multiply(eps_iter, grad)
            delta = batch_l1_proj(delta, eps)
            delta = clamp(xvar + delta, clip_min, clip_max) - xvar
        else:
            raise NotImplementedError(ord)
    return clamp(xvar + delta, clip_min, clip_max).detach()


def pgd_attack(
    predict, loss_fn, x, y, eps, nb_iter, eps_iter, rand_init, ord=INF, l1_sparsity=None, targeted=True,
    clip_min=0.0, clip_max=1.0,
):  # fmt: skip
    """PGDAttack.perturb (LinfPGDAttack, LinfBasicIterativeAttack with rand_init=False, SparseL1DescentAttack)"""
    delta = torch.zeros_like(x)
    if rand_init:
        delta = rand_init_delta(delta, x, ord, eps, clip_min, clip_max)
        delta = clamp(x + delta, min=clip_min, max=clip_max) - x
    return perturb_iterative(
        x, y, predict, nb_iter=nb_iter, eps=eps, eps_iter=eps_iter, loss_fn=loss_fn, minimize=targeted,
        ord=ord, clip_min=clip_min, clip_max=clip_max, delta_init=delta, l1_sparsity=l1_sparsity,
    )  # fmt: skip


def momentum_iterative_attack(
    predict,
    loss_fn,
    x,
    y,
    eps,
    nb_iter,
    eps_iter,
    decay_factor=1.0,
    targeted=True,
    clip_min=0.0,
    clip_max=1.0,
):
    """MomentumIterativeAttack.perturb, ord=inf"""
    delta = torch.zeros_like(x)
    g = torch.zeros_like(x)
    for _ in range(nb_iter):
        delta.requires_grad_()
        loss = loss_fn(predict(x + delta), y)
        if targeted:
            loss = -loss
        loss.backward()
        grad = delta.grad.detach()
        delta = delta.detach()
        g = decay_factor * g + normalize_by_pnorm(grad, p=1)
        delta = delta + batch_multiply(eps_iter, torch.sign(g))
        delta = batch_clamp(eps, delta)
        delta = clamp(x + delta, min=clip_min, max=clip_max) - x
    return x + delta
