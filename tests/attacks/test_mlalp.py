"""MLA-LP: the reference variant against an independent oracle of the study's control flow, each quirk switch on its
own, the corrected variant's batch independence, and the attack's invariants. (The LP solver: test_linf_lp.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlattack.attacks import MLALP
from mlattack.attacks import mlalp_rules as rules
from mlattack.attacks.jacobian import label_jacobian
from mlattack.attacks.linf_lp import solve_linf_lp_batch
from mlattack.evaluation.runner import load_attack_config
from tests.attacks.models import assert_batch_equals_one_by_one, make_cnn, make_images, make_linear
from tests.attacks.oracles.mlalp_reference import mlalp_reference

SWITCHES = (
    "batch_threshold",
    "threshold_downward",
    "reset_to_clean",
    "stall_give_up",
    "delete_zero_rows",
    "clamp_probabilities",
    "half_shows_positive",
)


class SmoothCNN(nn.Module):
    """conv-tanh-avgpool-linear: every input gradient is non-zero, so each LP has a unique optimum and the oracle's
    vertex (HiGHS on the full LP) and the attack's (dual + crossover) are the same point."""

    def __init__(self, num_classes: int, size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * (size // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.avg_pool2d(torch.tanh(self.conv((x - 0.5) * 4)), 2)
        return self.head(h.flatten(1))


def make_case(kind: str, seed: int = 0, n: int = 6, c: int = 5, size: int = 6):
    """(model, images, target). "show": every label positive (the study's target); "random": a random target;
    "saturated": random target, label 1 saturated at p ~ 1 and label 3 at p ~ 0 (clamped: zero Jacobian rows);
    "one_attacked": only the last sample has a label to flip (flattened index of the others out of range)."""
    torch.manual_seed(seed)
    model = SmoothCNN(c, size).eval()
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(n, 3, size, size, generator=g)
    target = (torch.rand(n, c, generator=g) > 0.5).float()
    if kind == "show":
        target = torch.ones(n, c)
    elif kind == "saturated":
        with torch.no_grad():
            model.head.bias[1] += 30.0
            model.head.bias[3] -= 30.0
    elif kind == "one_attacked":
        with torch.no_grad():
            target = (model(x) >= 0).float()
        target[-1, 0] = 1 - target[-1, 0]
    return model, x, target


def run_oracle(model, x, target, max_iter=20):
    with torch.no_grad():
        attacked = (torch.sigmoid(model(x)) >= 0.5) != (target > 0.5)  # the study: y = prediction
    adv, log = mlalp_reference(model, x.numpy(), target.numpy(), attacked.numpy().astype(int), max_iter)
    return torch.from_numpy(adv).float(), log


# which rules must fire in each oracle case, so that the comparison covers them
FIRES = {
    ("show", 0): ("threshold_updates", "resets", "stall_give_ups"),
    ("random", 1): ("threshold_updates", "resets", "stall_give_ups", "lp_failures"),
    ("saturated", 1): ("threshold_updates", "resets", "zero_rows"),
    ("one_attacked", 0): (),
}


@pytest.mark.parametrize(("kind", "seed"), list(FIRES))
def test_reference_variant_matches_the_oracle(kind: str, seed: int) -> None:
    model, x, target = make_case(kind, seed)
    oracle_adv, log = run_oracle(model, x, target)
    attack = MLALP(variant="reference")
    res = attack.run(model, x, target)
    with torch.no_grad():  # shown as the study decides: float32 sigmoid >= 0.5
        assert torch.equal(torch.sigmoid(model(res.adv)) >= 0.5, torch.sigmoid(model(oracle_adv)) >= 0.5)
    linf = (res.adv - x).flatten(1).abs().amax(1)
    torch.testing.assert_close(linf, (oracle_adv - x).flatten(1).abs().amax(1), atol=1e-6, rtol=0)
    ev = attack._events
    for rule in ("threshold_updates", "resets", "stall_give_ups", "lp_failures"):
        assert ev[rule] == getattr(log, rule), rule
    for rule in FIRES[(kind, seed)]:
        assert ev[rule] > 0, f"{rule} did not fire"
    if kind == "one_attacked":
        assert log.out_of_range > 0 and res.iterations[-1] > 0


SWITCH_CASE = {
    "batch_threshold": ("random", 0),
    "threshold_downward": ("show", 0),
    "reset_to_clean": ("random", 0),
    "stall_give_up": ("random", 0),
    "delete_zero_rows": ("saturated", 1),
    "clamp_probabilities": ("saturated", 1),
    "half_shows_positive": ("one_attacked", 0),
}


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_alone_changes_the_reference(switch: str) -> None:
    model, x, target = make_case(*SWITCH_CASE[switch])
    base = MLALP(variant="reference").run(model, x, target).adv
    attack = MLALP(variant="reference", **{switch: False})
    assert getattr(attack, switch) is False
    assert all(getattr(attack, s) for s in SWITCHES if s != switch)
    assert (attack.run(model, x, target).adv - base).abs().max() > 1e-3


def test_zero_rows_deleted_or_infeasible() -> None:
    """Label 1 saturates at p ~ 1: a sample whose target hides it has a zero row that must fall. The reference drops
    the row and attacks the other labels; without the deletion the LP is infeasible and the sample gets no step."""
    model, x, target = make_case("saturated", 1)
    hide = (target[:, 1] == 0).nonzero().squeeze(1)
    assert hide.numel() > 0
    ref = MLALP(variant="reference").run(model, x, target)
    strict_attack = MLALP(variant="reference", delete_zero_rows=False)
    strict = strict_attack.run(model, x, target)
    assert (ref.iterations[hide] > 0).all()
    assert (strict.iterations[hide] == 0).all() and strict_attack._events["lp_failures"] >= hide.numel()
    torch.testing.assert_close(strict.adv[hide], x[hide])
    # without the clamp the saturated label has a gradient: no zero rows at all
    unclamped = MLALP(variant="reference", clamp_probabilities=False)
    unclamped.run(model, x, target)
    assert unclamped._events["zero_rows"] == 0


def test_corrected_is_batch_independent_and_reference_is_not() -> None:
    model, x, target = make_case("random", 0)
    assert_batch_equals_one_by_one(MLALP(variant="corrected"), model, x, target)
    ref = MLALP(variant="reference")
    batch = ref.run(model, x, target).adv
    ones = torch.cat([ref.run(model, x[i : i + 1], target[i : i + 1]).adv for i in range(len(x))])
    assert (batch - ones).abs().max() > 1e-3  # the study's batch coupling, on purpose


def test_corrected_shows_labels_the_reference_gives_up_on() -> None:
    """Show-all target: the reference's thresholds fall below 0.5, so its LP is satisfied by labels still hidden."""
    model, x, target = make_case("show", 0)
    assert not MLALP(variant="reference").run(model, x, target).reached.any()
    assert MLALP(variant="corrected").run(model, x, target).reached.all()


def test_threshold_rules() -> None:
    attacked = torch.tensor([[True, False], [True, True]])
    thr = torch.full((2, 2), 0.5, dtype=torch.float64)
    low = torch.full((2, 2), 0.3)
    # the batch rule: one value for every attacked label; 0.5 - 8 x 0.05 > 0.1 in float64, so it ends at 0.05
    fired = sum(rules.batch_threshold_update([0, 1], thr, attacked, low, low, 0.05, 0.1) for _ in range(6))
    assert (
        fired == 9
        and thr[0, 1] == 0.5
        and torch.allclose(thr[attacked], torch.tensor(0.05, dtype=torch.float64))
    )
    # a sample index past the end of the flattened attacked array (3 entries): no test, nothing written
    thr = torch.full((2, 2), 0.5, dtype=torch.float64)
    assert rules.batch_threshold_update([5], thr, attacked, low, low, 0.05, 0.1) == 0
    # per label: only the labels whose own test fires, never below the floor
    thr = torch.full((2, 2), 0.5, dtype=torch.float64)
    before = torch.tensor([[0.3, 0.3], [0.95, 0.7]])
    after = torch.tensor([[0.2, 0.2], [0.9, 0.65]])
    for _ in range(20):
        rules.label_threshold_update(torch.tensor([0, 1]), thr, attacked, before, after, 0.05, 0.1)
    assert thr[0, 0] == pytest.approx(0.1) and thr[0, 1] == 0.5 and thr[1, 0] == 0.5 and thr[1, 1] == 0.5
    # a label to show at threshold 0.4: p >= 0.4 (downward, the study) or p >= 0.6 (corrected)
    t = torch.tensor([[1.0]])
    th = torch.tensor([[0.4]], dtype=torch.float64)
    assert rules.threshold_losses(th, t, True).item() == pytest.approx(-torch.log(torch.tensor(0.4)).item())
    assert rules.threshold_losses(th, t, False).item() == pytest.approx(-torch.log(torch.tensor(0.6)).item())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"variant": "paper"}, "variant"),
        ({"batch_threshold": "yes"}, "batch_threshold"),
        ({"reset_to_clean": 1}, "reset_to_clean"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"threshold_step": -0.1}, "threshold_step"),
        ({"min_threshold": 0.6}, "min_threshold"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MLALP(**kwargs)


def test_switches_follow_the_variant_and_are_logged() -> None:
    ref, cor = MLALP(variant="reference").hyperparameters(), MLALP().hyperparameters()
    assert cor["variant"] == "corrected" and ref["variant"] == "reference"
    assert all(ref[s] is True and cor[s] is False for s in SWITCHES)
    assert MLALP(variant="corrected", reset_to_clean=True).hyperparameters()["reset_to_clean"] is True


def test_one_lp_step_lowers_the_loss_and_the_attack_keeps_range() -> None:
    model, x = make_linear(4, 5, scale=2.0), 0.25 + 0.5 * make_images(2, 5)
    target = torch.ones(2, 4)
    res = MLALP(max_iter=4).run(model, x, target)
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    assert (res.iterations >= 1).all() and (res.iterations <= 4).all()
    with torch.no_grad():
        loss0 = rules.label_losses(model(x), target, clamp=False)[0].sum(1)
        loss1 = rules.label_losses(model(res.adv), target, clamp=False)[0].sum(1)
    assert (loss1 < loss0).all()


def test_batch_equals_one_by_one_and_deterministic() -> None:
    model, x = make_cnn(3), make_images(2, 5, seed=3)
    target = torch.tensor([[1.0, 1, 1], [1, 0, 1]])
    assert_batch_equals_one_by_one(MLALP(max_iter=2), model, x, target)


@pytest.mark.parametrize("variant", ["reference", "corrected"])
@pytest.mark.parametrize("num_classes", [1, 6])
def test_any_class_count(num_classes: int, variant: str) -> None:
    model, x = make_cnn(num_classes), make_images(2, 5)
    res = MLALP(max_iter=2, variant=variant).run(model, x, torch.ones(2, num_classes))
    assert res.adv.shape == x.shape and res.loss.shape == (2,)


def test_configs_reference_and_corrected() -> None:
    ref = load_attack_config("configs/attack/mlalp.yaml")
    assert ref.variant == "reference" and all(getattr(ref, s) for s in SWITCHES)
    settings = (ref.max_iter, ref.threshold, ref.threshold_step, ref.min_threshold, ref.early_stop)
    assert settings == (20, 0.5, 0.05, 0.1, True)
    fixed = load_attack_config("configs/attack/mlalp-corrected.yaml")
    assert fixed.variant == "corrected" and not any(getattr(fixed, s) for s in SWITCHES)
    assert load_attack_config("configs/attack/mlalp.yaml", {"reset_to_clean": False}).reset_to_clean is False


@pytest.mark.parametrize("aim_at_threshold", [True, False])
def test_first_lp_step_lands_short_of_the_threshold_unless_aimed_past_it(aim_at_threshold: bool) -> None:
    """On a linear network the first step (threshold 0.5, every label to show) brings the linearised loss of each
    hidden label whose row binds to its loss at p = 0.5; BCE is convex in the logit, so p stays below 0.5 (rows
    with slack may pass it). Aimed in the logit at 0.5 + 0.05 instead, every label lands at or past 0.55."""
    model, x = make_linear(6, 5, scale=2.0), 0.3 + 0.4 * make_images(3, 5, seed=2)
    target = torch.ones(3, 6)
    z, jac = label_jacobian(model, x)
    hidden = z < 0
    assert hidden.sum() >= 6
    _, dloss = rules.label_losses(z, target, clamp=False)
    thr = torch.full((3, 6), 0.5, dtype=torch.float64)
    if aim_at_threshold:
        delta = rules.threshold_losses(thr, target, True) - rules.label_losses(z, target, clamp=False)[0]
    else:
        delta = rules.logit_aim_gaps(z, dloss, thr, target, True, 0.05)
    rows = jac.flatten(2).double() * dloss.unsqueeze(-1)
    r, _, feasible = solve_linf_lp_batch(rows, delta)
    assert feasible.all()
    binds = hidden & ((rows @ r.unsqueeze(-1)).squeeze(-1) - delta).abs().le(1e-6 * delta.abs())
    x1 = x.double() + r.view_as(x)
    assert x1.min() > 0 and x1.max() < 1  # no clipping: the step is the LP's
    with torch.no_grad():
        p1 = torch.sigmoid(model(x1.float()).double())
    if aim_at_threshold:
        assert binds.any(1).all()
        assert (p1[binds] < 0.5).all() and (p1[binds] > torch.sigmoid(z.double())[binds]).all()
    else:
        assert (p1[hidden] >= 0.55 - 1e-4).all()


def test_aiming_past_the_threshold_changes_the_reference_and_is_not_a_variant_quirk() -> None:
    model, x, target = make_case("show", 0)
    base = MLALP(variant="reference").run(model, x, target)
    aimed = MLALP(variant="reference", aim_at_threshold=False)
    assert (
        MLALP().aim_at_threshold and MLALP(variant="reference").aim_at_threshold
    )  # the algorithm's own rule
    res = aimed.run(model, x, target)
    assert (res.adv - base.adv).abs().max() > 1e-3
    with pytest.raises(ValueError, match="aim_at_threshold"):
        MLALP(aim_at_threshold=None)
