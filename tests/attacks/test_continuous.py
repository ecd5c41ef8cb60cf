"""Continuous batching: every sample's result equals attacking it alone, in any batch layout (DDP slicing too)."""

from __future__ import annotations

import pytest
import torch

from mlattack.attacks import BIM, FGM, FGSM, MIFGSM, PGD, SLIDE, Attack
from mlattack.attacks.continuous import run_continuous, sample_generator, sample_starts, supports_continuous
from mlattack.attacks.iterative import run_iterative
from tests.attacks.models import make_cnn, make_images, make_linear
from tests.attacks.schedulers import assert_full_until_drain, assert_rank_slicing_keeps_results

# budgets where a linear model reaches most targets within a dozen steps, so early stop fires at varied steps
ATTACKS = {
    "FGSM": lambda **kw: FGSM(eps=0.3, **kw),
    "FGM": lambda **kw: FGM(eps=3.0, **kw),
    "BIM": lambda **kw: BIM(eps=0.3, nb_iter=12, eps_iter=0.03, **kw),
    "PGD": lambda **kw: PGD(eps=0.3, nb_iter=12, eps_iter=0.03, **kw),
    "MIFGSM": lambda **kw: MIFGSM(eps=0.3, nb_iter=12, eps_iter=0.03, **kw),
    "SLIDE": lambda **kw: SLIDE(eps=30.0, nb_iter=12, eps_iter=3.0, rand_init=True, **kw),
}
SEED = 5
N = 9


def problem(kind: str = "linear"):
    model = make_linear(5, 8) if kind == "linear" else make_cnn(5)
    images = make_images(N, 8, seed=1)
    target = (torch.rand(N, 5, generator=torch.Generator().manual_seed(4)) > 0.3).float()
    keys = [100 + 7 * i for i in range(N)]  # selection positions: any integers
    return model, images, target, keys


def one_by_one(attack: Attack, model, images, target, keys) -> list:
    """Each sample alone, its random start drawn from its own generator."""
    out = []
    for i, key in enumerate(keys):
        if hasattr(attack, "generator"):
            attack.generator = sample_generator(SEED, key)
        out.append(attack.run(model, images[i : i + 1], target[i : i + 1]))
    return out


def assert_same(res, ones) -> None:
    for i, one in enumerate(ones):
        torch.testing.assert_close(res.adv[i : i + 1], one.adv, atol=1e-6, rtol=0)
        assert int(res.iterations[i]) == int(one.iterations[0]), i
        assert bool(res.reached[i]) == bool(one.reached[0]), i
        assert bool(res.grad_finite[i]) == bool(one.grad_finite[0]), i


@pytest.mark.parametrize("early_stop", [True, False])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_continuous_equals_one_by_one_and_ordinary_batch(name: str, early_stop: bool):
    model, images, target, keys = problem()
    attack = ATTACKS[name](early_stop=early_stop)
    assert supports_continuous(attack)
    res = run_continuous(attack, model, images, target, keys, SEED, slots=3)
    assert_same(res, one_by_one(attack, model, images, target, keys))
    # an ordinary batch from the same per-sample starts gives the same images
    plan = attack.iterative_plan(model)
    start = sample_starts(plan, images, keys, SEED)
    with torch.no_grad():
        state = torch.zeros_like(images) if plan.momentum else None
        batch = run_iterative(
            attack, model, images, target, plan.nb_iter, plan.step, plan.project, start, state
        )
    torch.testing.assert_close(res.adv, batch.adv, atol=1e-6, rtol=0)
    assert torch.equal(res.iterations, batch.iterations)
    if early_stop and plan.nb_iter > 1:  # early stop fired at different steps for different samples
        assert res.reached.any() and len(set(res.iterations.tolist())) > 2


def test_random_starts_are_per_sample_and_seeded():
    model, images, target, keys = problem()
    attack = ATTACKS["PGD"](early_stop=True)
    a = run_continuous(attack, model, images, target, keys, SEED, slots=4)
    b = run_continuous(attack, model, images, target, keys, SEED + 1, slots=4)
    assert not torch.allclose(a.adv, b.adv)
    # the same sample under another key draws another start; under its own key the same one in any position
    rev = run_continuous(attack, model, images.flip(0), target.flip(0), keys[::-1], SEED, slots=2)
    torch.testing.assert_close(rev.adv.flip(0), a.adv, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["PGD", "MIFGSM"])
def test_ddp_rank_slicing_gives_the_same_per_sample_results(name: str):
    """Ranks attack disjoint shares of whole groups (``RankSlice``); any world size and group gives each sample
    the result it gets in one process."""
    model, images, target, keys = problem("cnn")
    attack = ATTACKS[name](early_stop=True)
    whole = run_continuous(attack, model, images, target, keys, SEED, slots=3)
    assert_rank_slicing_keeps_results(
        lambda x, t, k, slots: run_continuous(attack, model, x, t, k, SEED, slots),
        images,
        target,
        keys,
        whole,
    )


def test_batch_stays_full_until_the_queue_is_empty():
    model, images, target, keys = problem()
    attack = ATTACKS["BIM"](early_stop=True)
    sizes: list[int] = []
    handle = model.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    try:
        res = run_continuous(attack, model, images, target, keys, SEED, slots=4, diagnostics=False)
    finally:
        handle.remove()
    assert_full_until_drain(sizes, slots=4)
    assert sum(sizes) == int(res.iterations.sum()) + int(res.reached.sum())  # no pass wasted
    assert torch.isnan(res.loss[~res.reached]).all()  # no diagnostics pass for spent samples


def test_bad_arguments():
    model, images, target, keys = problem()
    with pytest.raises(ValueError, match="slots"):
        run_continuous(ATTACKS["BIM"](), model, images, target, keys, SEED, slots=0)
    with pytest.raises(ValueError, match="keys"):
        run_continuous(ATTACKS["BIM"](), model, images, target, keys[:2], SEED, slots=2)


@pytest.mark.parametrize("sync_every", [2, 5, 1000])
@pytest.mark.parametrize("name", ["BIM", "MIFGSM", "SLIDE"])
def test_reading_the_stop_flags_seldom_changes_no_result(name: str, sync_every: int):
    """A GPU reads the early-stop flags once per `sync_every` steps: a sample that stopped waits in the batch,
    frozen at the image, step count and loss it stopped with. Every result equals the per-step read's and the
    sample's own run alone."""
    model, images, target, keys = problem()
    attack = ATTACKS[name](early_stop=True)
    each = run_continuous(attack, model, images, target, keys, SEED, slots=3, sync_every=1)
    seldom = run_continuous(attack, model, images, target, keys, SEED, slots=3, sync_every=sync_every)
    assert each.reached.any() and len(set(each.iterations.tolist())) > 2  # stops at varied steps
    torch.testing.assert_close(seldom.adv, each.adv, atol=1e-6, rtol=0)
    for field in ("iterations", "reached", "grad_finite"):
        assert torch.equal(getattr(seldom, field), getattr(each, field)), field
    torch.testing.assert_close(seldom.loss, each.loss, equal_nan=True)
    assert_same(seldom, one_by_one(attack, model, images, target, keys))


def test_the_sync_interval_defaults_per_device(monkeypatch):
    from mlattack.attacks.continuous import default_sync_every

    monkeypatch.delenv("MLATTACK_SYNC_EVERY", raising=False)
    assert default_sync_every(torch.device("cpu")) == 1
    assert default_sync_every(torch.device("cuda")) == 8
    monkeypatch.setenv("MLATTACK_SYNC_EVERY", "4")
    assert default_sync_every(torch.device("cpu")) == 4
