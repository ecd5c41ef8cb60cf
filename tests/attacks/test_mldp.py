"""ML-DP: both linear steps against their closed forms, the reference variant against an independent NumPy oracle of
the study's code (where its quirks fire), each quirk switch on its own, success, batch independence, early stop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlattack.attacks import MLDP
from mlattack.attacks.mldp import minimum_norm_step
from mlattack.attacks.mldp_solve import gram_inverse_step
from mlattack.evaluation.runner import load_attack_config
from tests.attacks.models import assert_batch_equals_one_by_one, make_cnn, make_images, make_linear
from tests.attacks.oracles.mldp_reference import reference_mldp

SWITCHES = ("best_by_image_norm", "skip_singular", "threshold_on_probability", "accumulate_unclipped")


class QuirkCNN(nn.Module):
    """A tiny CNN's four labels plus two built to trip the study's linear algebra.

    Label 4 is label 1 plus ``relu(20 * (red mean - 0.5))``: where that gate is shut its gradient equals label 1's
    bit for bit, so the Gram matrix is exactly singular. Label 5 is ``3 * relu(20 * (green mean - 0.5)) - 1``: where
    its gate is shut it has no gradient at all (an all-zero Gram row).
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = make_cnn(4, seed=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x)
        twin = z[:, 1] + torch.relu(20 * (x[:, 0].mean((1, 2)) - 0.5))
        dead = 3 * torch.relu(20 * (x[:, 1].mean((1, 2)) - 0.5)) - 1.0
        return torch.cat([z, twin[:, None], dead[:, None]], 1)


def plain_case(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return make_cnn(5, seed=seed), make_images(6, 8, seed=seed), (torch.rand(6, 5, generator=g) > 0.5).float()


def quirk_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Eight images, each target the clean prediction with two labels flipped."""
    model, x = QuirkCNN().eval(), make_images(8, 8, seed=3)
    with torch.no_grad():
        target = (model(x) >= 0).float()
    g = torch.Generator().manual_seed(0)
    for i in range(len(x)):
        flip = torch.randperm(6, generator=g)[:2]
        target[i, flip] = 1 - target[i, flip]
    return model, x, target


def oracle(model: nn.Module, x: torch.Tensor, target: torch.Tensor):
    return reference_mldp(model, x.numpy(), (2 * target - 1).numpy())


# -- the two linear steps ------------------------------------------------------------------------------------------
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


def test_gram_inverse_step_solves_drops_zero_rows_and_refuses_a_singular_gram() -> None:
    rng = np.random.default_rng(0)
    jac = rng.standard_normal((4, 50)).astype(np.float32)
    vals = rng.random(4).astype(np.float32)
    sign = np.array([1, -1, 1, -1], dtype=np.float32)
    level = (0.5 + 0.02 * sign).astype(np.float32)
    r = gram_inverse_step(jac, vals, sign, level)
    assert r is not None and r.dtype == np.float64
    np.testing.assert_allclose(jac.astype(np.float64) @ r, level - vals, atol=1e-5)  # every label on its aim
    np.testing.assert_allclose(r, np.linalg.pinv(jac.astype(np.float64)) @ (level - vals), atol=1e-5)
    jac[2] = 0.0  # no gradient: that label leaves the system, the others are still solved exactly
    r = gram_inverse_step(jac, vals, sign, level)
    keep = [0, 1, 3]
    np.testing.assert_allclose(jac[keep].astype(np.float64) @ r, (level - vals)[keep], atol=1e-5)
    jac[2] = jac[0]  # the same gradient twice: singular, no step
    assert gram_inverse_step(jac, vals, sign, level) is None


# -- variants, switches, configs -----------------------------------------------------------------------------------
def test_variants_resolve_every_switch_and_log_the_resolved_values() -> None:
    ref, cor = MLDP(variant="reference").hyperparameters(), MLDP().hyperparameters()
    assert cor["variant"] == "corrected" and cor["overshoot"] == 0.02
    assert ref["overshoot"] == 0.0 and ref["early_stop"] and cor["early_stop"]
    for name in SWITCHES:
        assert ref[name] is True and cor[name] is False
        one = MLDP(variant="reference", **{name: False}).hyperparameters()
        assert one[name] is False and all(one[o] is True for o in SWITCHES if o != name)


def test_configs_are_the_reference_and_the_corrected_variant() -> None:
    ref, cor = (
        load_attack_config("configs/attack/mldp.yaml"),
        load_attack_config("configs/attack/mldp-corrected.yaml"),
    )
    assert ref.hyperparameters() == MLDP(max_iter=20, variant="reference").hyperparameters()
    assert cor.hyperparameters() == MLDP(max_iter=20, variant="corrected").hyperparameters()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "paper"}, "variant must be one of"),
        ({"skip_singular": "yes"}, "skip_singular must be true, false or null"),
        ({"best_by_image_norm": 1}, "best_by_image_norm must be true, false or null"),
        ({"threshold_on_probability": "no"}, "threshold_on_probability must be"),
        ({"accumulate_unclipped": 0}, "accumulate_unclipped must be"),
        ({"overshoot": -0.1}, "overshoot must be a finite number >= 0"),
        ({"overshoot": 0.5}, r"overshoot must be in \[0, 0.5\)"),
        ({"max_iter": 0}, "max_iter must be"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MLDP(**kwargs)


# -- the reference variant against the oracle ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reference_variant_equals_the_oracle(seed: int) -> None:
    model, x, target = plain_case(seed)
    res = MLDP(variant="reference").run(model, x, target)
    run = oracle(model, x, target)
    np.testing.assert_allclose(res.adv.numpy(), run.adv, atol=1e-6, rtol=0)
    assert run.iterations == 20  # the batch ran its full budget (some samples never reach the target)


def test_reference_variant_equals_the_oracle_where_its_quirks_fire() -> None:
    model, x, target = quirk_case()
    run = oracle(model, x, target)
    assert run.singular and run.dropped and run.image_norm_wins  # every peculiar branch is taken
    at_start = {i for it, i in run.singular if it == 0}
    assert 0 < len(at_start) < len(x)  # some samples are singular from the start, the others
    assert {i for it, i in run.singular if it > 0} - at_start  # become so after a step (the twin gate shuts)
    res = MLDP(variant="reference").run(model, x, target)
    np.testing.assert_allclose(res.adv.numpy(), run.adv, atol=1e-6, rtol=0)


def test_reference_variant_equals_the_oracle_on_plain_seed_with_tie_decisions() -> None:
    model, x, target = plain_case(3)
    run = oracle(model, x, target)
    assert len({i for _, i in run.image_norm_wins}) >= 3
    np.testing.assert_allclose(
        MLDP(variant="reference").run(model, x, target).adv.numpy(), run.adv, atol=1e-6
    )


# -- each quirk alone ----------------------------------------------------------------------------------------------
def test_overshoot_alone_turns_boundary_landings_into_successes() -> None:
    reached = [0, 0]
    for seed in range(4):
        model, x, target = plain_case(seed)
        reached[0] += int(MLDP(variant="reference").run(model, x, target).reached.sum())
        reached[1] += int(MLDP(variant="reference", overshoot=0.02).run(model, x, target).reached.sum())
    assert reached[0] <= 4 and reached[1] == 24  # aiming at 0.5 itself leaves labels on the boundary


def test_skip_singular_alone() -> None:
    model, x, target = quirk_case()
    run = oracle(model, x, target)
    stuck = sorted({i for it, i in run.singular if it == 0})  # singular before the first step: never moves
    assert stuck
    ref = MLDP(variant="reference").run(model, x, target)
    pinv = MLDP(variant="reference", skip_singular=False).run(model, x, target)
    assert torch.equal(ref.adv[stuck], x[stuck]) and (ref.iterations[stuck] == 0).all()
    assert (pinv.iterations[stuck] > 0).all() and not torch.equal(
        pinv.adv[stuck], x[stuck]
    )  # pinv still steps


def test_best_by_image_norm_alone() -> None:
    """By perturbation norm the clean image wins every tie, so an image that is not the clean one must show more.

    ML-DP drives logits to the decision boundary, so many adversarial logits end within 1e-7 of 0, where a fresh
    forward pass rounds them to either side depending on the CPU's vector kernels (AVX2 vs AVX-512 oneDNN
    convolutions). Such a label counts as shown here when that helps: the checks hold whichever way it rounds.
    """
    model, x, target = plain_case(3)
    run = oracle(model, x, target)
    wins = sorted({i for _, i in run.image_norm_wins})
    ref = MLDP(variant="reference").run(model, x, target)
    alt = MLDP(variant="reference", best_by_image_norm=False).run(model, x, target)
    assert (ref.adv[wins] - alt.adv[wins]).abs().amax() > 1e-3
    want = target > 0.5
    with torch.no_grad():
        z_clean, z_alt, z_ref = model(x), model(alt.adv), model(ref.adv)
    assert z_clean.abs().min() > 1e-2  # the clean scores do not depend on rounding
    clean_score = ((z_clean >= 0) == want).sum(1)

    def most_shown(z: torch.Tensor) -> torch.Tensor:
        """Target labels shown, a logit within 1e-3 of 0 counted as shown (it may round either way)."""
        return (((z >= 0) == want) | (z.abs() < 1e-3)).sum(1)

    alt_moved = (alt.adv != x).flatten(1).any(1)
    ref_moved = (ref.adv != x).flatten(1).any(1)
    assert (most_shown(z_alt)[alt_moved] > clean_score[alt_moved]).all()  # a better image must show more
    # a tie: both variants visit the same images; one attacked sample where no image showed more than the clean one
    # (by perturbation norm the clean image stayed), and by image norm another image of equal score won
    tie = (alt.iterations > 0) & ~alt_moved & ref_moved
    assert tie.any() and (most_shown(z_ref)[tie] >= clean_score[tie]).all()


class PinnedCNN(nn.Module):
    """A tiny CNN's three labels plus one whose logit is ``-3e-8 + 4 * (blue mean - 0.5)``: on an image whose blue
    channel is all 0.5 that is exactly -3e-8 on any CPU (the mean of equal values is exact in any summation order),
    so sigmoid rounds it to 0.5 whatever kernels compute the convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.body = make_cnn(3, seed=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pinned = -3e-8 + 4 * (x[:, 2].mean((1, 2)) - 0.5)
        return torch.cat([self.body(x), pinned[:, None]], 1)


def test_threshold_on_probability_alone() -> None:
    """A logit of -3e-8 rounds to sigmoid 0.5: shown for the study's rule, not for ``logit >= 0``.

    On a CNN the label is built to sit there (:class:`PinnedCNN`). A label that an attack run *lands* within
    rounding of logit 0 (the reference aims at exactly 0) is in (-6e-8, 0) or not by its last bits, which differ
    between AVX2 and AVX-512 convolutions: a CNN run that showed the switch on one kernel did not on the other."""
    model = make_linear(1, 4)
    with torch.no_grad():
        model.linear.weight.abs_()
        model.linear.bias.fill_(-3e-8)
    x, target = torch.zeros(1, 3, 4, 4), torch.ones(1, 1)
    z = model(x)
    assert -6e-8 < z.item() < 0 and torch.sigmoid(z).item() == 0.5
    prob = MLDP(variant="corrected", threshold_on_probability=True).run(model, x, target)
    logit = MLDP(variant="corrected").run(model, x, target)
    assert prob.iterations.item() == 0 and torch.equal(prob.adv, x)  # already "shown": not attacked
    assert logit.iterations.item() == 1 and logit.reached.item() and not torch.equal(logit.adv, x)
    model, x = PinnedCNN().eval(), make_images(3, 8, seed=5)  # and on a CNN, with the reference variant
    x[:, 2] = 0.5
    with torch.no_grad():
        z = model(x)
    assert (z[:, 3] == -3e-8).all() and (torch.sigmoid(z[:, 3]) == 0.5).all()
    assert (z[:, :3].abs() > 1e-3).all()  # the CNN's labels are far from the boundary: their target is shown
    target = torch.cat([(z[:, :3] >= 0).float(), torch.ones(3, 1)], 1)
    prob = MLDP(variant="reference").run(model, x, target)
    logit = MLDP(variant="reference", threshold_on_probability=False).run(model, x, target)
    assert (prob.iterations == 0).all() and torch.equal(prob.adv, x)
    assert (logit.iterations >= 1).all() and logit.reached.all()
    assert ((logit.adv - x).flatten(1).abs().amax(1) > 1e-3).all()


def test_accumulate_unclipped_alone() -> None:
    model, x, target = plain_case(0)
    ref = MLDP(variant="reference").run(model, x, target)
    alt = MLDP(variant="reference", accumulate_unclipped=False).run(model, x, target)
    assert (ref.adv - alt.adv).abs().amax() > 1e-3
    assert alt.adv.min() >= 0 and alt.adv.max() <= 1


# -- behaviour shared by both variants -----------------------------------------------------------------------------
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


@pytest.mark.parametrize("variant", ["reference", "corrected"])
def test_batch_equals_one_by_one_and_deterministic(variant: str) -> None:
    model, x = make_cnn(4), make_images(3, 6, seed=2)
    target = torch.tensor([[1.0, 1, 0, 1], [0, 1, 1, 0], [1, 0, 0, 0]])
    assert_batch_equals_one_by_one(MLDP(max_iter=3, variant=variant, early_stop=False), model, x, target)


@pytest.mark.parametrize("variant", ["reference", "corrected"])
@pytest.mark.parametrize("num_classes", [1, 9])
def test_any_class_count(num_classes: int, variant: str) -> None:
    model, x = make_cnn(num_classes), make_images(2, 6)
    res = MLDP(max_iter=2, variant=variant).run(model, x, torch.ones(2, num_classes))
    assert res.adv.shape == x.shape and res.loss.shape == (2,)


@pytest.mark.parametrize("variant", ["reference", "corrected"])
def test_early_stop_returns_the_first_success_as_the_full_run_up_to_that_step(variant: str) -> None:
    model, x = make_linear(4, 5, scale=2.0), make_images(3, 5, seed=2)
    target = torch.ones(3, 4)
    early = MLDP(max_iter=20, variant=variant, overshoot=0.02, early_stop=True).run(model, x, target)
    assert early.reached.all() and (early.iterations >= 1).all() and (early.iterations < 20).all()
    for i in range(3):  # the same images as a run that simply stops after that many steps
        k = int(early.iterations[i])
        full = MLDP(max_iter=k, variant=variant, overshoot=0.02, early_stop=False)
        torch.testing.assert_close(early.adv[i : i + 1], full.run(model, x[i : i + 1], target[i : i + 1]).adv)
