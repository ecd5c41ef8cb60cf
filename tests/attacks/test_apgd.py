"""ML-APGD against the algorithm of Croce & Hein (2020): the checkpoint schedule, the two step-halving conditions,
restarts from the best point (a per-sample oracle written from the paper's pseudo-code, compared point by point),
budget, batch independence, early stop and random restarts."""

from __future__ import annotations

import math

import pytest
import torch

from mlattack.attacks import APGD, Attack
from mlattack.attacks.apgd_steps import checkpoint_fractions, checkpoints, halve_step
from mlattack.attacks.losses import multilabel_margin, summed_bce
from tests.attacks.models import assert_batch_equals_one_by_one, make_cnn, make_images, make_linear


# -- the schedule and the conditions -----------------------------------------------------------------------------
def test_checkpoint_schedule():
    assert checkpoint_fractions() == [0.0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99]
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(30) == [7, 13, 18, 21, 24, 27, 28, 30]  # ceil(12.3) = 13, ceil(27.9) = 28, ...
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]  # 9.3 and 9.9 both round up to 10: one checkpoint
    assert checkpoints(1) == [1]


def test_halve_step_conditions():
    span, rho = 4, 0.75  # condition 1 needs at least 3 of 4 steps to lower the loss
    successes = torch.tensor([3, 2, 4, 4, 0])
    halved_last = torch.tensor([False, False, False, True, True])
    best = torch.tensor([1.0, 1.0, 2.0, 2.0, 1.0])
    best_last = torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0])
    # 0: enough successes and the best improved -> keep; 1: condition 1; 2: condition 2 (best unchanged, not
    # halved last time); 3: best unchanged but halved last time -> keep; 4: condition 1 although it improved
    assert halve_step(successes, span, rho, halved_last, best, best_last).tolist() == [
        False,
        True,
        True,
        False,
        True,
    ]


# -- an oracle written from the paper's pseudo-code (one sample, plain Python bookkeeping) ------------------------
def oracle(model, x, t, eps, n_iter, norm, loss_fn, rho=0.75, alpha=0.75, restart=True):
    """Algorithm 1 of Croce & Hein for one sample, maximising f = -loss. The checkpoint decision is taken once
    x(w_j) is evaluated, and a restart replaces x(w_j) by x_max. Returns the points in the order they were
    evaluated, x_max, and the checkpoints with the condition that halved the step there."""

    def f_and_grad(z):
        z = z.detach().requires_grad_(True)
        f = -loss_fn(model(z), t).sum()
        (g,) = torch.autograd.grad(f, z)
        return f.item(), g

    def project(d):  # points are kept as offsets d = x(k) - x
        if norm == "Linf":
            d = d.clamp(-eps, eps)
        else:
            d = d * min(1.0, eps / d.norm().item())
        return (x + d).clamp(0, 1) - x

    def ascent(g):
        return g.sign() if norm == "Linf" else g / g.norm()

    p, w = [0.0, 0.22], [0]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0 + 1e-9:
        p.append(round(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06), 2))
    w += sorted({math.ceil(round(q * n_iter, 6)) for q in p[1:]})

    eta = 2 * eps
    points, f, grads = [torch.zeros_like(x)], [], []
    evaluated = [x.clone()]
    fx, g = f_and_grad(x)
    f.append(fx)
    grads.append(g)
    f_max, x_max, g_max = fx, torch.zeros_like(x), g
    eta_at, fmax_at, halvings = [eta], [f_max], []
    for k in range(1, n_iter + 1):
        z = project(points[k - 1] + eta * ascent(grads[k - 1]))
        if k > 1:
            z = project(
                points[k - 1] + alpha * (z - points[k - 1]) + (1 - alpha) * (points[k - 1] - points[k - 2])
            )
        points.append(z)
        evaluated.append(x + z)
        fz, gz = f_and_grad(x + z)
        f.append(fz)
        grads.append(gz)
        if fz > f_max:
            f_max, x_max, g_max = fz, z.clone(), gz
        if k in w[1:] and k < n_iter:
            j = w.index(k)
            increases = sum(f[i + 1] > f[i] for i in range(w[j - 1], k))
            cond1 = increases < rho * (k - w[j - 1])
            cond2 = eta_at[-1] == eta and fmax_at[-1] == f_max
            eta_at.append(eta)
            fmax_at.append(f_max)
            if cond1 or cond2:
                halvings.append((k, "1" if cond1 else "2"))
                eta /= 2
                # restart: x(k) is x_max; its predecessor too (no momentum across the restart)
                if restart:
                    points[k], points[k - 1], f[k], grads[k] = x_max.clone(), x_max.clone(), f_max, g_max
    return evaluated, x + x_max, halvings


def _forward_inputs(model):
    seen: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    return seen, handle


ORACLE_CASES = [  # (norm, eps, loss, the conditions that halve the step somewhere in the case)
    ("Linf", 0.03, summed_bce, {"1"}),
    ("Linf", 0.03, multilabel_margin, {"1"}),
    ("L2", 0.4, summed_bce, {"1"}),
    ("L2", 0.4, multilabel_margin, {"1", "2"}),
]


@pytest.mark.parametrize("norm,eps,loss_fn,conditions", ORACLE_CASES)
def test_every_point_matches_the_paper_oracle(norm, eps, loss_fn, conditions):
    """One sample at a time (a batched forward rounds differently, and APGD's comparisons of losses turn a last-bit
    difference into another branch; batch independence is tested below)."""
    model, n_iter = make_cnn(5, seed=2), 20
    images = make_images(4, 8, seed=3)
    target = (torch.rand(4, 5, generator=torch.Generator().manual_seed(1)) > 0.3).float()
    halvings, restarts_matter = [], False
    for i in range(len(images)):
        x, t = images[i : i + 1], target[i : i + 1]
        seen, handle = _forward_inputs(model)
        res = APGD(eps, n_iter, norm=norm, loss_fn=loss_fn).run(model, x, t)
        handle.remove()
        assert len(seen) == n_iter + 1  # nb_iter gradient passes and one forward at the last iterate
        evaluated, x_max, halved = oracle(model, x, t, eps, n_iter, norm, loss_fn)
        halvings += halved
        for k in range(n_iter + 1):  # every point the attack evaluated is the oracle's, restarts included
            torch.testing.assert_close(seen[k], evaluated[k], atol=1e-6, rtol=0)
        torch.testing.assert_close(res.adv, x_max, atol=1e-6, rtol=0)
        without, _, _ = oracle(model, x, t, eps, n_iter, norm, loss_fn, restart=False)
        restarts_matter |= any(
            not torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(seen, without, strict=True)
        )
    assert {kind for _, kind in halvings} == conditions
    # the conditions are selective: some checkpoints keep the step (n_iter = 20 has 7 checkpoints before the end)
    assert len(halvings) < 7 * len(images)
    assert restarts_matter  # going back to x_max changed later points, so the comparison above checks it


# -- invariants ------------------------------------------------------------------------------------------------
INF = math.inf
BUDGETS = {"Linf": (0.03, INF), "L2": (0.4, 2)}


@pytest.mark.parametrize("rand_init", [False, True])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_budget_and_pixel_range(norm, rand_init):
    eps, p = BUDGETS[norm]
    model, images = make_cnn(5), make_images(6, 8, seed=1)
    images[0] = 0.0  # pixels at the edges of the range: the clip binds
    images[1] = 1.0
    target = torch.ones(6, 5)
    attack = APGD(eps, 12, norm=norm, rand_init=rand_init, generator=torch.Generator().manual_seed(0))
    res = attack.run(model, images, target)
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    norms = (res.adv - images).flatten(1).norm(p=p, dim=1)
    assert (norms <= eps * (1 + 1e-5)).all(), norms
    assert (norms[2:] > 0.3 * eps).all(), norms  # it moved
    assert (res.loss < summed_bce(model(images), target).detach()).all()
    torch.testing.assert_close(res.loss, summed_bce(model(res.adv), target).detach(), atol=1e-5, rtol=0)
    assert res.iterations.tolist() == [12] * 6


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("norm,loss_fn", [("Linf", summed_bce), ("L2", multilabel_margin)])
def test_batch_equals_one_by_one(norm, loss_fn, early_stop):
    """(Where a sample's losses nearly tie, a batched forward that rounds differently can tip APGD's comparisons
    into another branch; this case has none.)"""
    model, images = make_linear(5, 8), make_images(5, 8, seed=1)
    target = (torch.rand(5, 5, generator=torch.Generator().manual_seed(4)) > 0.3).float()
    eps = 0.1 if norm == "Linf" else 1.0
    attack = APGD(eps, 15, norm=norm, loss_fn=loss_fn, early_stop=early_stop)
    batch, ones = assert_batch_equals_one_by_one(attack, model, images, target)
    for i, one in enumerate(ones):
        assert batch.iterations[i] == one.iterations[0] and batch.reached[i] == one.reached[0]
    if early_stop:  # the early-stop path ran: some samples stopped before the last step, some never did
        assert batch.reached.any() and (batch.iterations < 15).any() and (batch.iterations == 15).any()


def test_early_stop_freezes_at_first_success():
    model, images = make_linear(5, 8), make_images(8, 8, seed=1)
    target = torch.ones(8, 5)
    nb_iter = 15
    seen, handle = _forward_inputs(model)
    APGD(0.1, nb_iter, loss_fn=multilabel_margin).run(model, images, target)
    handle.remove()
    shows = torch.stack([Attack.reached(model(x), target) for x in seen])  # (nb_iter + 1, N)
    first = torch.where(shows.any(0), shows.int().argmax(0), torch.full((8,), nb_iter))
    assert len(set(first.tolist())) >= 3, first  # samples succeed at different steps (and some never)
    sizes: list[int] = []
    handle = model.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    res = APGD(0.1, nb_iter, loss_fn=multilabel_margin, early_stop=True).run(model, images, target)
    handle.remove()
    assert sizes == [int((first >= k).sum()) for k in range(nb_iter + 1)]  # frozen samples leave the batch
    assert res.iterations.tolist() == first.tolist()
    assert res.reached.tolist() == shows.any(0).tolist()
    for i, k in enumerate(first.tolist()):
        if shows[:, i].any():
            torch.testing.assert_close(res.adv[i], seen[k][i], atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_restarts_keep_each_samples_best(norm):
    model, images, target = make_cnn(5), make_images(6, 8, seed=1), torch.ones(6, 5)
    eps = BUDGETS[norm][0]
    gen = torch.Generator().manual_seed(3)  # three single runs drawing their starts one after the other
    runs = [
        APGD(eps, 6, norm=norm, rand_init=True, generator=gen).run(model, images, target) for _ in range(3)
    ]
    res = APGD(
        eps, 6, norm=norm, rand_init=True, n_restarts=3, generator=torch.Generator().manual_seed(3)
    ).run(model, images, target)
    losses = torch.stack([r.loss for r in runs])  # (3, N)
    best = losses.argmin(0)
    assert len(set(best.tolist())) >= 2  # different samples are best in different restarts
    torch.testing.assert_close(res.loss, losses.min(0).values, atol=0, rtol=0)
    for i, r in enumerate(best.tolist()):
        torch.testing.assert_close(res.adv[i], runs[r].adv[i], atol=0, rtol=0)
    assert res.iterations.tolist() == [18] * 6


def test_multilabel_margin():
    logits = torch.tensor([[2.0, -1.0, 0.05], [0.2, 0.3, -0.2]])
    target = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # row 0: label 1 is 1.1 short of the margin, label 2 (to hide) 0.15 short; row 1: every label past 0.1
    torch.testing.assert_close(multilabel_margin(logits, target), torch.tensor([1.25, 0.0]))
    torch.testing.assert_close(multilabel_margin(logits, target, kappa=0.0), torch.tensor([1.05, 0.0]))


def test_configs():
    from mlattack.evaluation.runner import load_attack_config

    linf, l2 = (
        load_attack_config("configs/attack/apgd.yaml"),
        load_attack_config("configs/attack/apgd-l2.yaml"),
    )
    assert isinstance(linf, APGD) and (linf.norm, linf.eps, linf.nb_iter) == ("Linf", 0.3, 30)
    assert isinstance(l2, APGD) and (l2.norm, l2.eps, l2.nb_iter) == ("L2", 1.0, 30)
    margin = load_attack_config(
        "configs/attack/apgd.yaml", {"loss_fn": "mlattack.attacks.losses.multilabel_margin"}
    )
    assert margin.loss_fn is multilabel_margin


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"eps": 0.0}, "eps"),
        ({"nb_iter": 0}, "nb_iter"),
        ({"norm": "L1"}, "norm"),
        ({"n_restarts": 0}, "n_restarts"),
        ({"n_restarts": 1.5}, "n_restarts"),
        ({"n_restarts": 2}, "n_restarts"),  # without rand_init every restart is the same run
        ({"rho": 0.0}, "rho"),
        ({"rho": 1.5}, "rho"),
        ({"momentum": float("nan")}, "momentum"),
    ],
)
def test_bad_values_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        APGD(**kwargs)
