"""ML-CW: the reference variant against an oracle of the study's code, each quirk switch alone, the corrected
variant's batch independence, the binary search, success on a linear model, the configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlattack.attacks import MLCW
from mlattack.attacks.mlcw_steps import next_search_step
from mlattack.evaluation.runner import load_attack_config
from tests.attacks.models import assert_batch_equals_one_by_one, make_cnn, make_images, make_linear
from tests.attacks.oracles.mlcw_reference import mlcw_reference

SWITCHES = ("batch_stall_check", "stall_skips_best", "stall_cap_1e10", "half_matches_both", "tanh_origin")


def _fast(**kw) -> MLCW:
    base = dict(max_iter=60, binary_search_steps=3, check_every=10)
    base.update(kw)
    return MLCW(**base)


class ProbeNet(nn.Module):
    """A tiny CNN's 4 labels plus two that make the reference's quirks fire: label 4 is dead (constant logit -3,
    probability 0.047: a sample asked to show it never succeeds, so its c grows by 10x a step) and label 5's logit
    is about -1e-8, so its float32 sigmoid is exactly 0.5 (matches either target sign under the reference's rule)."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = make_cnn(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.cnn(x)
        return torch.cat([z, torch.full_like(z[:, :1], -3.0), 1e-10 * (z[:, :1] - 100.0)], dim=1)


def _probe_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Four samples asked to flip label 0 (reachable) and to show label 5; sample 3 also asks for the dead label,
    so its hinge term never moves and, summed over the batch, hides how the others still improve."""
    model, x = ProbeNet().eval(), make_images(4, 8)
    with torch.no_grad():
        target = (model(x) >= 0).float()
    target[:, 0] = 1 - target[:, 0]
    target[:, 5] = 1.0
    target[3, 4] = 1.0
    return model, x, target


PROBE = dict(max_iter=20, binary_search_steps=10)  # >= 10 steps: the reference's "repeat" branch runs


def test_reference_matches_the_oracle_where_the_batch_stall_check_stops_an_improving_sample() -> None:
    model, x, target = _probe_case()
    expected, log = mlcw_reference(model, x, target, **PROBE)
    res = MLCW(variant="reference", **PROBE).run(model, x, target)
    np.testing.assert_allclose(res.adv.numpy(), expected, atol=1e-6, rtol=0)
    # every forward pass counts, but the iterations whose check stopped the batch were not ranked
    assert res.iterations.tolist() == (log.ranked + len(log.stalls)).tolist()
    # the batch check fired mid-step while some samples' own losses still fell by more than 0.01 %
    mid_step = [who for (_, it), who in zip(log.stalls, log.stopped_while_improving, strict=True) if it > 0]
    improving = sorted({i for who in mid_step for i in who})
    assert improving and 3 not in improving
    assert any(
        it == 0 for _, it in log.stalls
    )  # later steps: c = 1e11 on the dead label, loss > 1e10 at once
    assert (MLCW(variant="reference", **PROBE).run(model, x, target).adv == res.adv).all()  # deterministic

    # per-sample checks let those samples go on (other images); the batch couples them: alone, other images
    per_sample = MLCW(variant="reference", batch_stall_check=False, **PROBE).run(model, x, target)
    for i in improving:
        assert per_sample.iterations[i] > res.iterations[i]
        assert (per_sample.adv[i] - res.adv[i]).abs().max() > 1e-3
        alone = MLCW(variant="reference", **PROBE).run(model, x[i : i + 1], target[i : i + 1])
        assert (alone.adv[0] - res.adv[i]).abs().max() > 1e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_matches_the_oracle_on_random_targets(seed: int) -> None:
    model, x = make_cnn(5, seed=seed), make_images(6, 8, seed=seed)
    target = (torch.rand(6, 5, generator=torch.Generator().manual_seed(seed)) > 0.5).float()
    expected, _ = mlcw_reference(model, x, target, binary_search_steps=4, max_iter=40)
    res = MLCW(variant="reference", binary_search_steps=4, max_iter=40).run(model, x, target)
    np.testing.assert_allclose(res.adv.numpy(), expected, atol=1e-6, rtol=0)


def test_each_switch_alone_changes_the_reference() -> None:
    model, x, target = _probe_case()
    ref = MLCW(variant="reference", **PROBE)
    base = ref.run(model, x, target)
    for name in SWITCHES:
        attack = MLCW(variant="reference", **{name: False}, **PROBE)
        assert [getattr(attack, s) for s in SWITCHES] == [s != name for s in SWITCHES]
        res = attack.run(model, x, target)
        changed = not torch.equal(res.adv, base.adv) or not torch.equal(res.iterations, base.iterations)
        assert changed, name
        if name == "stall_cap_1e10":  # the large-c steps run instead of ending at their first check
            assert (res.iterations > base.iterations).all()
        if name == "batch_stall_check":
            assert (res.iterations != base.iterations).any()
        if name in ("stall_skips_best", "tanh_origin"):  # same schedule, other images
            assert torch.equal(res.iterations, base.iterations) and not torch.equal(res.adv, base.adv)
        if name == "half_matches_both":  # label 5 (p == 0.5, logit < 0) no longer counts: no step succeeds
            assert (
                float(attack.last_const_bounds[1].min())
                == 1e10
                > 1e9
                > float(ref.last_const_bounds[1][:3].max())
            )


def test_corrected_variant_is_batch_independent() -> None:
    model, x, target = _probe_case()
    attack = MLCW(variant="corrected", max_iter=20, binary_search_steps=3)
    assert not any(getattr(attack, s) for s in SWITCHES) and attack.check_every == 2
    assert_batch_equals_one_by_one(attack, model, x, target)


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
    # the reference variant's shared schedule: one count for the batch, until early stop lets samples leave
    ref = _fast(variant="reference").run(model, x, target)
    assert ref.reached.all() and len(set(ref.iterations.tolist())) == 1
    ref_first = _fast(variant="reference", early_stop=True).run(model, x, target)
    assert ref_first.reached.all() and (ref_first.iterations < ref.iterations).all()


def test_batch_equals_one_by_one_and_deterministic() -> None:
    model, x = make_cnn(4), make_images(3, 6, seed=1)
    target = torch.tensor([[1.0, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]])
    attack = _fast(max_iter=12, binary_search_steps=2, check_every=4)
    batch, ones = assert_batch_equals_one_by_one(attack, model, x, target)
    assert [one.iterations.item() for one in ones] == batch.iterations.tolist()


def test_search_update_rule() -> None:
    const = torch.tensor([1.0, 1.0, 4.0, 4.0, 2e9], dtype=torch.float64)
    lower = torch.tensor([0.0, 0.0, 2.0, 2.0, 0.0], dtype=torch.float64)
    upper = torch.tensor([1e10, 1e10, 8.0, 8.0, 1e10], dtype=torch.float64)
    ok = torch.tensor([False, True, False, True, True])
    next_search_step(torch.arange(5), ok, const, lower, upper)
    assert const.tolist() == [10.0, 0.5, 6.0, 3.0, 2e9]  # a success with c >= 1e9 keeps c
    assert lower.tolist() == [1.0, 0.0, 4.0, 2.0, 0.0] and upper.tolist() == [1e10, 1.0, 8.0, 4.0, 2e9]


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


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"binary_search_steps": 0}, "binary_search_steps"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"check_every": 0}, "check_every"),
        ({"abort_early": "yes"}, "abort_early"),
        ({"variant": "paper"}, "variant"),
        *(({name: "on"}, name) for name in SWITCHES),
    ],
)
def test_bad_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MLCW(**kwargs)


def test_configs_reference_and_corrected() -> None:
    ref = load_attack_config("configs/attack/mlcw.yaml")
    assert ref.variant == "reference" and all(getattr(ref, s) for s in SWITCHES)
    assert (ref.max_iter, ref.binary_search_steps, ref.initial_const, ref.lr) == (1000, 10, 1e5, 0.01)
    assert ref.abort_early and ref.check_every == 100 and ref.confidence == 0.0 and not ref.early_stop
    fixed = load_attack_config("configs/attack/mlcw-corrected.yaml")
    assert fixed.variant == "corrected" and not any(getattr(fixed, s) for s in SWITCHES)
    demo = load_attack_config(
        "configs/attack/mlcw.yaml", {"binary_search_steps": 3, "max_iter": 200, "check_every": 50}
    )
    assert (demo.binary_search_steps, demo.max_iter, demo.check_every) == (3, 200, 50)
    assert load_attack_config("configs/attack/mlcw.yaml", {"max_iter": 200}).check_every == 20
    assert ref.hyperparameters()["batch_stall_check"] is True
