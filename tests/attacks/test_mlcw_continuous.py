"""ML-CW under continuous batching: a batch-independent ML-CW sample keeps its own binary search (c, bracket, Adam
state, stall checks, best image), so every result equals attacking the sample alone and ``MLCW.perturb`` on an
ordinary batch, in any batch layout (DDP slicing too); the batch stays full while samples queue; the reference
variant, whose stall check couples its batch, is never run continuously."""

from __future__ import annotations

import pytest
import torch

from mlattack.attacks import MLCW, AttackResult
from mlattack.attacks.mlcw_continuous import run_mlcw_continuous
from mlattack.evaluation.chunks import attack_chunk, runs_continuously
from tests.attacks.schedulers import (
    assert_full_until_drain,
    assert_rank_slicing_keeps_results,
    forward_layouts,
)
from tests.attacks.test_apgd_continuous import RowByRow
from tests.attacks.test_continuous import SEED, N, problem

BUDGET = dict(max_iter=30, binary_search_steps=3)  # stall checks every 3 iterations
FIELDS = ("adv", "iterations", "reached", "loss")
# quirk switches that keep the samples independent; the last two make every search step of some samples end at
# its first check unranked (c = 1e11: the loss starts above 1e10), so they keep the clean image
QUIRKS = [
    {},
    {"half_matches_both": True, "tanh_origin": True},
    {"variant": "reference", "batch_stall_check": False},
    {"stall_skips_best": True, "stall_cap_1e10": True, "initial_const": 1e11},
]


def assert_same(res: AttackResult, one: AttackResult, i: int) -> None:
    """Row ``i`` of ``res`` equals the single-sample result ``one`` (up to a different batch size's rounding)."""
    torch.testing.assert_close(res.adv[i : i + 1], one.adv, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.loss[i : i + 1], one.loss, atol=1e-5, rtol=0)
    assert int(res.iterations[i]) == int(one.iterations[0]), i
    assert bool(res.reached[i]) == bool(one.reached[0]), i


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("kind", ["linear", "cnn"])
def test_continuous_equals_one_by_one_and_ordinary_batch(kind: str, early_stop: bool):
    model, images, target, keys = problem(kind)
    attack = MLCW(**BUDGET, early_stop=early_stop)
    res = run_mlcw_continuous(attack, model, images, target, keys, SEED, slots=3, diagnostics=True)
    bounds = attack.last_const_bounds
    for i in range(N):
        assert_same(res, attack.run(model, images[i : i + 1], target[i : i + 1]), i)
    batch = attack.run(model, images, target)
    for i in range(N):
        assert_same(res, AttackResult(*(getattr(batch, f)[i : i + 1] for f in FIELDS)), i)
    for mine, theirs in zip(bounds, attack.last_const_bounds, strict=True):  # each sample's bracket on c
        assert torch.equal(mine, theirs)
    # samples left at different iterations, so later ones entered mid-flight
    assert len(set(res.iterations.tolist())) > 2
    if early_stop and kind == "linear":
        assert res.reached.sum() > N // 2 and (res.iterations[res.reached] < 3 * 30).all()


@pytest.mark.parametrize("early_stop", [False, True])
def test_with_all_slots_it_is_perturb_bitwise(early_stop: bool):
    """``slots = N``: the rows in flight are ``perturb``'s active rows, in the same order, so the same arithmetic.

    The CNN runs row by row (``RowByRow``). On oneDNN's AVX2 convolutions one sample's kept logits, and so its
    loss, differed by one rounding (4.8e-7) between the two while images, iterations and ``reached`` agreed: a
    convolution rounds a row according to the batch tensor it is computed in, which the scheduler (compacting its
    rows) and ``perturb`` build differently. Row by row each row is computed alone on any CPU, so this compares the
    scheduler's bookkeeping bit for bit; ``test_batch_independent_quirks_run_continuously_per_sample`` covers real
    batches."""
    model, images, target, keys = problem("cnn")
    model = RowByRow(model)
    attack = MLCW(**BUDGET, early_stop=early_stop)
    res = run_mlcw_continuous(attack, model, images, target, keys, SEED, slots=N, diagnostics=True)
    batch = attack.run(model, images, target)
    for name in FIELDS:
        assert torch.equal(getattr(res, name), getattr(batch, name)), name


@pytest.mark.parametrize("quirks", QUIRKS, ids=lambda q: "+".join(q) or "corrected")
def test_batch_independent_quirks_run_continuously_per_sample(quirks: dict):
    model, images, target, keys = problem("linear")
    attack = MLCW(**BUDGET, early_stop=True, **quirks)
    assert attack.batch_independent and runs_continuously(attack, fast=True)
    res = run_mlcw_continuous(attack, model, images, target, keys, SEED, slots=4, diagnostics=True)
    for i in range(N):
        assert_same(res, attack.run(model, images[i : i + 1], target[i : i + 1]), i)
    lean = run_mlcw_continuous(attack, model, images, target, keys, SEED, slots=4)
    assert torch.equal(lean.adv, res.adv) and torch.equal(lean.iterations, res.iterations)
    # without diagnostics, only a sample that kept its clean image unranked is not judged
    unseen = res.iterations == attack.binary_search_steps
    assert unseen.any() == ("initial_const" in quirks)
    assert torch.isnan(lean.loss[unseen]).all() and not lean.reached[unseen].any()
    assert torch.equal(lean.loss[~unseen], res.loss[~unseen])
    assert torch.equal(lean.reached[~unseen], res.reached[~unseen])
    if unseen.any():
        assert torch.equal(res.adv[unseen], images[unseen])


def test_ddp_rank_slicing_gives_the_same_per_sample_results():
    """Ranks attack disjoint shares of whole groups; any world size, group and slot count gives each sample the
    result it gets in one process."""
    model, images, target, keys = problem("cnn")
    attack = MLCW(**BUDGET, early_stop=True)
    whole = run_mlcw_continuous(attack, model, images, target, keys, SEED, slots=3)
    assert len(set(whole.iterations.tolist())) > 1
    assert_rank_slicing_keeps_results(
        lambda x, t, k, slots: run_mlcw_continuous(attack, model, x, t, k, SEED, slots),
        images,
        target,
        keys,
        whole,
    )


@pytest.mark.parametrize("initial_const", [1e5, 1e11])
def test_batch_stays_full_while_samples_queue(initial_const: float):
    model, images, target, keys = problem("linear")
    attack = MLCW(**BUDGET, initial_const=initial_const, stall_skips_best=True, stall_cap_1e10=True)
    sizes: list[int] = []  # the attack's passes (with gradient) ...
    judged: list[int] = []  # ... and those that judge a clean image kept unranked
    handle = model.register_forward_hook(
        lambda m, inp, out: (sizes if torch.is_grad_enabled() else judged).append(inp[0].shape[0])
    )
    try:
        res = run_mlcw_continuous(attack, model, images, target, keys, SEED, slots=4, diagnostics=True)
    finally:
        handle.remove()
    assert_full_until_drain(sizes, slots=4)
    assert sum(sizes) == int(res.iterations.sum())  # one forward row per iteration, no pass wasted
    unseen = int((res.iterations == attack.binary_search_steps).sum())
    assert (unseen > 0) == (initial_const > 1e10) and sum(judged) == unseen


def test_channels_last_inputs_stay_channels_last():
    """Fast mode hands channels_last images (its network copy runs NHWC); refills and drops must not reorder."""
    model, images, target, keys = problem("cnn")
    attack = MLCW(**BUDGET, early_stop=True)
    cl = images.contiguous(memory_format=torch.channels_last)
    res, nhwc = forward_layouts(
        model, lambda: run_mlcw_continuous(attack, model, cl, target, keys, SEED, slots=4)
    )
    assert len(nhwc) > 30 and all(nhwc)
    plain = run_mlcw_continuous(attack, model, images, target, keys, SEED, slots=4)
    torch.testing.assert_close(res.adv, plain.adv, atol=1e-6, rtol=0)
    assert torch.equal(res.iterations, plain.iterations)


def test_fast_mode_runs_corrected_mlcw_continuously_and_the_reference_group_by_group():
    model, images, target, _ = problem("linear")
    positions = list(range(N))  # groups of 4: {0..3}, {4..7}, {8}
    corrected = MLCW(max_iter=20, binary_search_steps=3, early_stop=True)
    assert runs_continuously(corrected, fast=True) and not runs_continuously(corrected, fast=False)
    res, errors = attack_chunk("MLCW", corrected, model, images, target, positions, 7, 3, fast=True)
    assert errors == [""] * N
    for i in range(N):
        assert_same(res, corrected.run(model, images[i : i + 1], target[i : i + 1]), i)

    # early stop frees slots at different iterations: run continuously, the batch stall check would couple each
    # sample with the newcomers (other images than in its group)
    reference = MLCW(variant="reference", max_iter=20, binary_search_steps=3, early_stop=True)
    coupled = MLCW(variant="corrected", batch_stall_check=True, max_iter=20, binary_search_steps=3)
    for attack in (reference, coupled):
        assert not attack.batch_independent and not runs_continuously(attack, fast=True)
        with pytest.raises(ValueError, match="batch_stall_check"):
            run_mlcw_continuous(attack, model, images, target, positions, 7, slots=4)
    res, errors = attack_chunk("MLCW", reference, model, images, target, positions, 7, 4, fast=True)
    assert errors == [""] * N
    groups = [reference.run(model, images[g : g + 4], target[g : g + 4]) for g in (0, 4, 8)]
    for name in FIELDS:
        assert torch.equal(getattr(res, name), torch.cat([getattr(r, name) for r in groups])), name


def test_bad_arguments():
    model, images, target, keys = problem()
    with pytest.raises(ValueError, match="slots"):
        run_mlcw_continuous(MLCW(**BUDGET), model, images, target, keys, SEED, slots=0)
    with pytest.raises(ValueError, match="keys"):
        run_mlcw_continuous(MLCW(**BUDGET), model, images, target, keys[:2], SEED, slots=2)
