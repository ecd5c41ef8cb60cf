"""ML-APGD under continuous batching: each sample keeps its own iteration, checkpoints, step size, best point and
random start, so every result equals attacking the sample alone, in any batch layout (DDP slicing too), and the
batch stays full while samples wait in the queue."""

from __future__ import annotations

import pytest
import torch

from mlattack.attacks import APGD, AttackResult
from mlattack.attacks.apgd_continuous import run_apgd_continuous
from mlattack.attacks.continuous import sample_generator
from mlattack.attacks.losses import multilabel_margin, summed_bce
from mlattack.evaluation.cost import measure_cost
from tests.attacks.schedulers import (
    assert_full_until_drain,
    assert_rank_slicing_keeps_results,
    forward_layouts,
)
from tests.attacks.test_continuous import SEED, N, problem

CPU = torch.device("cpu")
NB = 15
# cases where no two losses of a sample nearly tie, so that batches of other sizes (which round the forward pass
# differently) take the same branches as the sample alone
CASES = [("linear", "Linf", 0.1, multilabel_margin), ("linear", "L2", 1.0, multilabel_margin)]
CASES += [("cnn", "Linf", 0.1, summed_bce), ("cnn", "L2", 1.0, multilabel_margin)]


def one_by_one(attack: APGD, model, images, target, keys) -> list:
    """Each sample alone through ``APGD.perturb``, its random starts drawn from its own generator."""
    out = []
    for i, key in enumerate(keys):
        attack.generator = sample_generator(SEED, key)
        out.append(attack.run(model, images[i : i + 1], target[i : i + 1]))
    attack.generator = None
    return out


def assert_same(res, ones) -> None:
    for i, one in enumerate(ones):
        torch.testing.assert_close(res.adv[i : i + 1], one.adv, atol=1e-6, rtol=0)
        torch.testing.assert_close(res.loss[i : i + 1], one.loss, atol=1e-5, rtol=0)
        assert int(res.iterations[i]) == int(one.iterations[0]), i
        assert bool(res.reached[i]) == bool(one.reached[0]), i
        assert bool(res.grad_finite[i]) == bool(one.grad_finite[0]), i


FIELDS = ("adv", "iterations", "reached", "loss", "grad_finite")


class RowByRow(torch.nn.Module):
    """The model applied to one row at a time: a batch then rounds each row as the row alone does, on any CPU. With
    random starts the CNN case took another L∞ path for one sample on AVX-512 kernels (a batch of 4 and a batch of 1
    round the convolutions apart), so the scheduler's bookkeeping is compared on arithmetic that does not depend on
    the batch; ``test_continuous_equals_one_by_one_and_ordinary_batch`` covers real batches."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(row) for row in x.split(1)])


def assert_equal(a, b) -> None:
    """Bitwise: the same arithmetic on the same batch."""
    for name in FIELDS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_without_early_stop_and_random_start_it_is_perturb_scheduled_differently(norm: str):
    """All rows enter together and stay in step: ``slots = N`` is ``perturb`` on the batch (passes included), and
    smaller slots are ``perturb`` on consecutive groups of that size."""
    model, images, target, keys = problem("linear")
    # summed BCE, L∞, on this model: one sample's losses nearly tie, so perturb on the batch of 9 and groups of 3
    # differ for it; the continuous result is compared with perturb on the same rows
    attack = APGD(0.1 if norm == "Linf" else 1.0, NB, norm=norm)
    with measure_cost(model, CPU) as cost:
        res = run_apgd_continuous(attack, model, images, target, keys, SEED, slots=N)
    with measure_cost(model, CPU) as ref_cost:
        ref = attack.run(model, images, target)
    assert_equal(res, ref)
    passes = (cost.forwards, cost.backwards)
    assert passes == (ref_cost.forwards, ref_cost.backwards) == (N * (NB + 1), N * NB)
    res = run_apgd_continuous(attack, model, images, target, keys, SEED, slots=3)
    groups = [attack.run(model, images[g : g + 3], target[g : g + 3]) for g in range(0, N, 3)]
    assert_equal(res, AttackResult(*(torch.cat([getattr(r, f) for r in groups]) for f in FIELDS)))


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("kind,norm,eps,loss_fn", CASES)
def test_continuous_equals_one_by_one_and_ordinary_batch(kind, norm, eps, loss_fn, early_stop):
    model, images, target, keys = problem(kind)
    attack = APGD(eps, NB, norm=norm, loss_fn=loss_fn, early_stop=early_stop)
    res = run_apgd_continuous(attack, model, images, target, keys, SEED, slots=3)
    assert_same(res, one_by_one(attack, model, images, target, keys))
    batch = attack.run(model, images, target)  # no randomness: an ordinary batch gives the same results
    torch.testing.assert_close(res.adv, batch.adv, atol=1e-6, rtol=0)
    assert torch.equal(res.iterations, batch.iterations) and torch.equal(res.reached, batch.reached)
    if early_stop and kind == "linear":  # samples stopped at different steps: later ones entered mid-flight
        assert res.reached.any() and len(set(res.iterations.tolist())) > 2


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_random_starts_and_restarts_equal_one_by_one(norm: str, early_stop: bool):
    """Restart r starts from the (r + 1)-th draw of the sample's own generator: what ``perturb`` draws for the
    sample alone, so every layout gives each sample the same result."""
    model, images, target, keys = problem("cnn")
    model = RowByRow(model)
    eps = 0.1 if norm == "Linf" else 1.0
    results = {}
    for n_restarts in (1, 2):
        attack = APGD(eps, NB, norm=norm, rand_init=True, n_restarts=n_restarts, early_stop=early_stop)
        res = run_apgd_continuous(attack, model, images, target, keys, SEED, slots=4)
        assert_same(res, one_by_one(attack, model, images, target, keys))
        results[n_restarts] = res
    one, two = results[1], results[2]
    assert (two.loss <= one.loss).all()  # a sample keeps its best restart ...
    assert (two.loss < one.loss).any()  # ... and the second restart, from another start, won for some
    stopped_first = one.iterations < NB if early_stop else torch.zeros(N, dtype=torch.bool)
    assert torch.equal(two.iterations[~stopped_first], one.iterations[~stopped_first] + NB)
    other_seed = run_apgd_continuous(attack, model, images, target, keys, SEED + 1, slots=4)
    assert not torch.allclose(other_seed.adv, two.adv)


def test_ddp_rank_slicing_gives_the_same_per_sample_results():
    """Ranks attack disjoint shares of whole groups; any world size, group and slot count gives each sample the
    result it gets in one process."""
    model, images, target, keys = problem("cnn")
    attack = APGD(0.1, NB, rand_init=True, n_restarts=2, loss_fn=multilabel_margin, early_stop=True)
    whole = run_apgd_continuous(attack, model, images, target, keys, SEED, slots=3)
    assert len(set(whole.iterations.tolist())) > 1
    assert_rank_slicing_keeps_results(
        lambda x, t, k, slots: run_apgd_continuous(attack, model, x, t, k, SEED, slots),
        images,
        target,
        keys,
        whole,
    )


def test_batch_stays_full_while_samples_queue_and_passes_are_counted():
    model, images, target, keys = problem("linear")
    attack = APGD(0.1, NB, loss_fn=multilabel_margin, early_stop=True)
    sizes: list[int] = []
    handle = model.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    try:
        with measure_cost(model, CPU) as cost:
            res = run_apgd_continuous(attack, model, images, target, keys, SEED, slots=4)
    finally:
        handle.remove()
    assert_full_until_drain(sizes, slots=4)
    # one forward row per iterate x(0..k) of each sample, no diagnostics pass
    assert sum(sizes) == cost.forwards == int(res.iterations.sum()) + N
    # a gradient for every iterate but the last; in a mixed batch the last one's gradient is computed as well
    ran_out = int((res.iterations == NB).sum())
    assert ran_out > 0 and cost.forwards - ran_out <= cost.backwards <= cost.forwards


def test_channels_last_inputs_stay_channels_last():
    """Fast mode hands channels_last images (its network copy runs NHWC); refills and drops must not reorder."""
    model, images, target, keys = problem("cnn")
    attack = APGD(0.1, NB, rand_init=True, loss_fn=multilabel_margin, early_stop=True)
    cl = images.contiguous(memory_format=torch.channels_last)
    res, nhwc = forward_layouts(
        model, lambda: run_apgd_continuous(attack, model, cl, target, keys, SEED, slots=4)
    )
    assert len(nhwc) > NB and all(nhwc)
    plain = run_apgd_continuous(attack, model, images, target, keys, SEED, slots=4)
    torch.testing.assert_close(res.adv, plain.adv, atol=1e-6, rtol=0)
    assert torch.equal(res.iterations, plain.iterations)


def test_bad_arguments():
    model, images, target, keys = problem()
    with pytest.raises(ValueError, match="slots"):
        run_apgd_continuous(APGD(), model, images, target, keys, SEED, slots=0)
    with pytest.raises(ValueError, match="keys"):
        run_apgd_continuous(APGD(), model, images, target, keys[:2], SEED, slots=2)
