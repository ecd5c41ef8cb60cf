"""ML-DP: the pseudo-inverse step against its closed form, success on a linear model, batch independence."""

from __future__ import annotations

import pytest
import torch

from mlattack.attacks import MLDP
from mlattack.attacks.mldp import minimum_norm_step
from tests.attacks.models import assert_batch_equals_one_by_one, make_cnn, make_images, make_linear


def test_minimum_norm_step_is_the_pseudo_inverse_solution() -> None:
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(3, 4, 30, generator=g, dtype=torch.float64)
    jac[1, 2] = 0.0  # a label with no gradient drops out
    jac[2, 3] = 2 * jac[2, 0]  # dependent rows: least-squares, minimum norm
    vals = torch.rand(3, 4, generator=g, dtype=torch.float64)
    r = minimum_norm_step(jac, vals)
    expected = torch.stack([torch.linalg.pinv(jac[i]) @ (0.5 - vals[i]) for i in range(3)])
    torch.testing.assert_close(r, expected, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(jac[0] @ r[0], 0.5 - vals[0], atol=1e-10, rtol=0)  # full rank: exact hit


def test_one_step_on_a_linear_model_equals_the_closed_form() -> None:
    model = make_linear(4, 8)
    with torch.no_grad():
        model.linear.bias.sub_(model.linear(torch.full((1, 192), 0.5))[0] + 1.0)  # clean logits = -1
    x = torch.full((1, 3, 8, 8), 0.5)
    res = MLDP(max_iter=1, overshoot=0.02, early_stop=False).run(model, x, torch.ones(1, 4))
    w = model.linear.weight.double()
    p = torch.sigmoid(model(x)).double()[0]
    jac = (p * (1 - p))[:, None] * w  # d sigmoid(Wx + b) / dx
    r = torch.linalg.pinv(jac) @ (0.52 - p)
    torch.testing.assert_close(
        res.adv.double().flatten(), (x.double().flatten() + r).clamp(0, 1), atol=1e-5, rtol=0
    )
    assert res.reached.item() and res.iterations.item() == 1


def test_reaches_target_within_budget_and_range() -> None:
    model, x = make_linear(5, 8), 0.25 + 0.5 * make_images(3, 8)
    target = torch.tensor([[0.0, 1, 0, 1, 1], [1, 0, 1, 0, 1], [1, 1, 0, 1, 0]])
    assert not (model(x) >= 0).eq(target > 0.5).all(1).any()
    res = MLDP(max_iter=20).run(model, x, target)
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert res.reached.all() and (model(res.adv) >= 0).eq(target > 0.5).all()
    assert ((res.iterations >= 1) & (res.iterations < 20)).all()  # stopped at the first success


def test_batch_equals_one_by_one_and_deterministic() -> None:
    model, x = make_cnn(4), make_images(3, 6, seed=2)
    target = torch.ones(3, 4)
    assert_batch_equals_one_by_one(MLDP(max_iter=3, early_stop=False), model, x, target)


@pytest.mark.parametrize("num_classes", [1, 9])
def test_any_class_count(num_classes: int) -> None:
    model, x = make_cnn(num_classes), make_images(2, 6)
    res = MLDP(max_iter=2).run(model, x, torch.ones(2, num_classes))
    assert res.adv.shape == x.shape and res.loss.shape == (2,)


def test_early_stop_returns_the_first_success_as_the_full_run_up_to_that_step() -> None:
    model, x = make_linear(4, 5, scale=2.0), make_images(3, 5, seed=2)
    target = torch.ones(3, 4)
    early = MLDP(max_iter=20, early_stop=True).run(model, x, target)
    assert early.reached.all() and (early.iterations >= 1).all() and (early.iterations < 20).all()
    for i in range(3):  # the same images as a run that simply stops after that many steps
        k = int(early.iterations[i])
        full = MLDP(max_iter=k, early_stop=False).run(model, x[i : i + 1], target[i : i + 1])
        torch.testing.assert_close(early.adv[i : i + 1], full.adv, atol=1e-6, rtol=0)
