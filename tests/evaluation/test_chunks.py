"""A loader batch of selected samples: continuous in fast mode, the study's groups otherwise (chunks.py)."""

from __future__ import annotations

import torch

from mlattack.attacks import APGD, PGD, Attack, AttackResult
from mlattack.attacks.continuous import sample_generator
from mlattack.evaluation.chunks import attack_chunk, loader_batch, runs_continuously
from tests.attacks.models import make_images, make_linear


class FailsOnBrightFirstImage(Attack):
    """Returns the images unchanged, except that it raises for a batch whose first pixel is above 0.5."""

    def perturb(self, model, images, target) -> AttackResult:
        if float(images[0, 0, 0, 0]) > 0.5:
            raise ArithmeticError("solver gave up")
        n = len(images)
        return AttackResult(
            images, torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.bool), torch.zeros(n)
        )


def problem(n: int = 8):
    return make_linear(5, 8), make_images(n, 8, seed=1), torch.ones(n, 5)


def test_paper_mode_attacks_each_group_as_its_own_seeded_batch():
    model, images, target = problem()
    positions = list(range(20, 28))  # groups of 4: {20..23}, {24..27}
    attack = PGD(eps=0.3, nb_iter=3, eps_iter=0.03)
    res, errors = attack_chunk("PGD", attack, model, images, target, positions, 7, 4, fast=False)
    assert errors == [""] * 8
    for g in (0, 4):
        torch.manual_seed(7 * 1_000_003 + positions[g])
        one = attack.run(model, images[g : g + 4], target[g : g + 4], diagnostics=False)
        torch.testing.assert_close(res.adv[g : g + 4], one.adv, atol=0, rtol=0)


def test_fast_mode_runs_iterative_attacks_continuously_per_sample():
    model, images, target = problem()
    positions = [3, 9, 10, 11, 30, 31, 32, 40]
    attack = PGD(eps=0.3, nb_iter=6, eps_iter=0.05, early_stop=True)
    assert runs_continuously(attack, fast=True) and not runs_continuously(attack, fast=False)
    res, _ = attack_chunk("PGD", attack, model, images, target, positions, 7, 3, fast=True)
    for i, p in enumerate(positions):
        alone = PGD(eps=0.3, nb_iter=6, eps_iter=0.05, early_stop=True, generator=sample_generator(7, p))
        one = alone.run(model, images[i : i + 1], target[i : i + 1], diagnostics=False)
        torch.testing.assert_close(res.adv[i : i + 1], one.adv, atol=1e-6, rtol=0)
        assert int(res.iterations[i]) == int(one.iterations[0])


def test_fast_mode_runs_apgd_continuously_per_sample():
    model, images, target = problem()
    positions = [3, 9, 10, 11, 30, 31, 32, 40]
    attack = APGD(eps=0.1, nb_iter=6, rand_init=True, n_restarts=2, early_stop=True)
    assert runs_continuously(attack, fast=True) and not runs_continuously(attack, fast=False)
    res, errors = attack_chunk("APGD", attack, model, images, target, positions, 7, 3, fast=True)
    assert errors == [""] * 8 and res.reached.any() and not res.reached.all()
    for i, p in enumerate(positions):  # each sample alone, its starts drawn from its own generator
        alone = APGD(0.1, 6, rand_init=True, n_restarts=2, early_stop=True, generator=sample_generator(7, p))
        one = alone.run(model, images[i : i + 1], target[i : i + 1])
        torch.testing.assert_close(res.adv[i : i + 1], one.adv, atol=1e-6, rtol=0)
        assert int(res.iterations[i]) == int(one.iterations[0])


def test_a_failing_group_fails_only_its_samples_and_results_keep_their_order():
    model, images, target = problem()
    images[4, 0, 0, 0], images[0, 0, 0, 0] = 0.9, 0.1  # the group at positions 4..7 fails, 0..3 does not
    order = [4, 5, 0, 1, 6, 2, 7, 3]  # positions out of order: results still follow them
    res, errors = attack_chunk(
        "X", FailsOnBrightFirstImage(), model, images[order], target, order, 7, 4, fast=True
    )
    assert errors == ["attack error: ArithmeticError: solver gave up" if p >= 4 else "" for p in order]
    torch.testing.assert_close(res.adv, images[order])
    assert loader_batch(10, fast=True) == 80 and loader_batch(10, fast=False) == 10
