"""ML-CW: range, success on a linear model, the per-sample binary search, done samples leaving the batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlattack.attacks import MLCW
from tests.attacks.models import assert_batch_equals_one_by_one, make_cnn, make_images, make_linear


def _fast(**kw) -> MLCW:
    base = dict(max_iter=60, binary_search_steps=3, check_every=10)
    base.update(kw)
    return MLCW(**base)


def test_range_success_and_done_samples_stop_early() -> None:
    model, x = make_linear(5, 6, scale=4.0), make_images(3, 6)
    target = torch.ones(3, 5)
    res = _fast().run(model, x, target)
    assert res.adv.shape == x.shape and res.adv.min() >= 0 and res.adv.max() <= 1
    assert res.reached.all() and (model(res.adv) >= 0).all()
    assert (res.iterations <= 3 * 60).all() and (
        res.iterations < 3 * 60
    ).any()  # aborts cut search steps short
    first = _fast(early_stop=True).run(model, x, target)
    assert first.reached.all() and (first.iterations < res.iterations).all()


def test_batch_equals_one_by_one_and_deterministic() -> None:
    model, x = make_cnn(4), make_images(3, 6, seed=1)
    target = torch.tensor([[1.0, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]])
    attack = _fast(max_iter=12, binary_search_steps=2, check_every=4)
    batch, ones = assert_batch_equals_one_by_one(attack, model, x, target)
    assert [one.iterations.item() for one in ones] == batch.iterations.tolist()


def test_search_update_rule() -> None:
    const = torch.tensor([1.0, 1.0, 4.0, 4.0], dtype=torch.float64)
    lower = torch.tensor([0.0, 0.0, 2.0, 2.0], dtype=torch.float64)
    upper = torch.tensor([1e10, 1e10, 8.0, 8.0], dtype=torch.float64)
    ok = torch.tensor([False, True, False, True])
    MLCW._next_search_step(torch.arange(4), ok, const, lower, upper)
    assert const.tolist() == [10.0, 0.5, 6.0, 3.0]
    assert lower.tolist() == [1.0, 0.0, 4.0, 2.0] and upper.tolist() == [1e10, 1.0, 8.0, 4.0]


def test_binary_search_brackets_the_minimal_constant() -> None:
    # One label, logit z = w.x + b on an image in the box's interior. Along w the objective is
    # c * max(0, 0.5 - sigmoid(z)) + s^2; it reaches the boundary z = 0 iff c * |w| / 4 >= 2 s with s = |z0| / |w|,
    # i.e. iff c >= c* = 8 |z0| / |w|^2.
    torch.manual_seed(0)
    lin = nn.Linear(48, 1)
    with torch.no_grad():
        lin.weight.normal_().mul_((4.0 / 3.0) ** 0.5 / lin.weight.norm())  # |w|^2 = 4/3
    x = torch.full((1, 3, 4, 4), 0.5)
    with torch.no_grad():
        lin.bias.fill_(-0.5 - float(lin.weight @ x.flatten()))  # z0 = -0.5
    model = nn.Sequential(nn.Flatten(), lin)
    c_star = 8 * 0.5 / (4.0 / 3.0)
    attack = MLCW(max_iter=200, binary_search_steps=8, initial_const=0.01, lr=0.02, abort_early=False)
    res = attack.run(model, x, torch.ones(1, 1))
    lower, upper = (float(v) for v in attack.last_const_bounds)
    assert res.reached.item()
    assert lower <= c_star * 1.15 and upper >= c_star / 1.15 and upper < 1e9
    assert upper / max(lower, 1e-12) < 2.0  # the search has narrowed the bracket


@pytest.mark.parametrize("num_classes", [1, 7])
def test_any_class_count(num_classes: int) -> None:
    model, x = make_cnn(num_classes), make_images(2, 8)
    res = _fast(max_iter=10, binary_search_steps=2).run(model, x, torch.ones(2, num_classes))
    assert res.adv.shape == x.shape and res.loss.shape == (2,) and res.iterations.shape == (2,)


def test_bad_hyperparameter_names_the_argument() -> None:
    with pytest.raises(ValueError, match="binary_search_steps"):
        MLCW(binary_search_steps=0)
