"""Invariants of FGSM, FGM, BIM, PGD, MI-FGSM and SLIDE (parity with AdverTorch: test_advertorch_parity.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mlattack.attacks import BIM, FGM, FGSM, MIFGSM, PGD, SLIDE, Attack
from mlattack.attacks.iterative import l1_ball, l2_ball, momentum_step
from mlattack.attacks.losses import summed_bce
from tests.attacks.advertorch_compat import utils as advertorch_utils
from tests.attacks.models import make_cnn, make_images, make_linear

# Small budgets for 8x8 / 16x16 images; the iterative ones take more steps than eps allows, so projections act.
INF = math.inf
SETTINGS = {  # name: (class, settings, norm, budget)
    "FGSM": (FGSM, {"eps": 0.05}, INF, 0.05),
    "FGM": (FGM, {"eps": 0.5}, 2, 0.5),
    "BIM": (BIM, {"eps": 0.02, "nb_iter": 8, "eps_iter": 0.005}, INF, 0.02),
    "PGD": (PGD, {"eps": 0.02, "nb_iter": 8, "eps_iter": 0.005}, INF, 0.02),
    "MIFGSM": (MIFGSM, {"eps": 0.02, "nb_iter": 8, "eps_iter": 0.005}, INF, 0.02),
    "SLIDE": (SLIDE, {"eps": 3.0, "nb_iter": 8, "eps_iter": 1.0, "l1_sparsity": 0.9}, 1, 3.0),
}
# Budgets large enough for a linear model to reach most targets within a dozen steps (early stop gets exercised).
STRONG = {
    "FGSM": {"eps": 0.3},
    "FGM": {"eps": 3.0},
    "BIM": {"eps": 0.3, "nb_iter": 12, "eps_iter": 0.03},
    "PGD": {"eps": 0.3, "nb_iter": 12, "eps_iter": 0.03},
    "MIFGSM": {"eps": 0.3, "nb_iter": 12, "eps_iter": 0.03},
    "SLIDE": {"eps": 30.0, "nb_iter": 12, "eps_iter": 3.0},
}
ITERATIVE = ["BIM", "PGD", "MIFGSM", "SLIDE"]


def make_attack(name: str, strong: bool = False, **kw) -> Attack:
    if name == "PGD" and "generator" not in kw:
        kw["generator"] = torch.Generator().manual_seed(0)
    cls, settings, _, _ = SETTINGS[name]
    return cls(**((STRONG[name] if strong else settings) | kw))


def case(kind: str, num_classes: int, size: int, n: int = 6, seed: int = 0):
    model = make_cnn(num_classes, seed) if kind == "cnn" else make_linear(num_classes, size, seed=seed)
    images = make_images(n, size, seed=seed + 1)
    target = torch.ones(n, num_classes)
    return model, images, target


CASES = [("cnn", 5, 8), ("linear", 20, 16)]


@pytest.mark.parametrize("kind,num_classes,size", CASES)
@pytest.mark.parametrize("name", list(SETTINGS))
def test_budget_and_pixel_range(name, kind, num_classes, size):
    model, images, target = case(kind, num_classes, size)
    _, _, p, eps = SETTINGS[name]
    res = make_attack(name).run(model, images, target)
    assert res.adv.shape == images.shape and res.adv.dtype == torch.float32
    assert res.adv.min() >= 0 and res.adv.max() <= 1
    norms = (res.adv - images).flatten(1).norm(p=p, dim=1)
    assert (norms <= eps * (1 + 1e-5)).all(), norms
    assert (norms > 0.3 * eps).all(), norms  # it did move
    assert res.iterations.tolist() == [getattr(make_attack(name), "nb_iter", 1)] * len(images)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_targeted_loss_decreases(name):
    model, images, target = case("cnn", 5, 8)
    clean = summed_bce(model(images), target).detach()
    if name in ITERATIVE:
        few = make_attack(name, nb_iter=2).run(model, images, target).loss
        many = make_attack(name, nb_iter=8).run(model, images, target).loss
        assert clean.mean() > few.mean() > many.mean()
        assert (many < clean).all()
    else:
        res = make_attack(name).run(model, images, target)
        assert (res.loss < clean).all()
        # the reported loss is the loss of the returned image
        torch.testing.assert_close(res.loss, summed_bce(model(res.adv), target).detach())


@pytest.mark.parametrize("target_kind", ["show_all", "hide_all", "arbitrary"])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_any_target_is_pursued(name, target_kind):
    model, images = make_linear(5, 8), make_images(8, 8, seed=1)
    target = {
        "show_all": torch.ones(8, 5),
        "hide_all": torch.zeros(8, 5),
        "arbitrary": (torch.rand(8, 5, generator=torch.Generator().manual_seed(3)) > 0.5).float(),
    }[target_kind]
    res = make_attack(name, strong=True).run(model, images, target)
    assert (res.loss < summed_bce(model(images), target).detach()).all()
    assert torch.equal(res.reached, Attack.reached(model(res.adv), target))
    if name != "SLIDE":  # the L1 budget above is too small to flip every label of every sample
        assert res.reached.all()


def test_pgd_seeded_determinism():
    model, images, target = case("cnn", 5, 8)
    runs = [PGD(0.02, 8, 0.005, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    a, b, c = (attack(model, images, target) for attack in runs)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # without a generator it draws from the global RNG, like AdverTorch
    torch.manual_seed(7)
    assert torch.equal(PGD(0.02, 8, 0.005)(model, images, target), a)


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_batch_independence(name, early_stop):
    model, images = make_linear(5, 8), make_images(5, 8, seed=1)
    target = (torch.rand(5, 5, generator=torch.Generator().manual_seed(4)) > 0.3).float()
    kw = {"rand_init": False} if name == "PGD" else {}  # a random start depends on the batch layout
    attack = make_attack(name, strong=True, early_stop=early_stop, **kw)
    batch = attack.run(model, images, target)
    for i in range(len(images)):
        one = attack.run(model, images[i : i + 1], target[i : i + 1])
        torch.testing.assert_close(batch.adv[i : i + 1], one.adv, atol=1e-6, rtol=0)
        assert batch.iterations[i] == one.iterations[0] and batch.reached[i] == one.reached[0]
    if early_stop:  # the early-stop path was exercised: some samples frozen before the last step
        assert batch.reached.any()
        if name in ITERATIVE:
            assert (batch.iterations < attack.nb_iter).any()


def _forward_batch_sizes(model):
    sizes: list[int] = []
    handle = model.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    return sizes, handle


@pytest.mark.parametrize("name", ["BIM", "MIFGSM", "SLIDE"])
def test_early_stop_freezes_at_first_success(name):
    model, images, target = make_linear(5, 8), make_images(8, 8, seed=1), torch.ones(8, 5)
    nb_iter = 12
    attacks = {
        "BIM": lambda k, es: BIM(0.3, k, 0.01, early_stop=es),
        "MIFGSM": lambda k, es: MIFGSM(0.3, k, 0.01, early_stop=es),
        "SLIDE": lambda k, es: SLIDE(30.0, k, 1.5, l1_sparsity=0.8, early_stop=es),
    }[name]
    # the image after k plain steps, for every k, and the first k at which it shows the target
    trajectory = [images] + [attacks(k, False)(model, images, target) for k in range(1, nb_iter + 1)]
    shows = torch.stack([Attack.reached(model(x), target) for x in trajectory])  # (nb_iter + 1, N)
    first = torch.where(
        shows.any(0), shows.int().argmax(0), torch.full_like(shows[0], nb_iter, dtype=torch.long)
    )
    assert len(set(first.tolist())) >= 3, first  # samples succeed at different steps (and some never)

    sizes, handle = _forward_batch_sizes(model)
    res = attacks(nb_iter, True).run(model, images, target)
    handle.remove()
    assert res.iterations.tolist() == first.tolist()
    assert res.reached.tolist() == shows[first, torch.arange(8)].tolist()
    for i, k in enumerate(first.tolist()):
        torch.testing.assert_close(res.adv[i], trajectory[k][i], atol=1e-6, rtol=0)
    # step i forwards only the samples not yet frozen; one final forward for those still running
    expected = [int((first >= i).sum()) for i in range(nb_iter + 1)]
    assert sizes == [s for s in expected if s > 0]


def test_one_forward_per_step_without_early_stop():
    model, images, target = case("cnn", 5, 8)
    sizes, handle = _forward_batch_sizes(model)
    with_diagnostics = BIM(0.02, 5, 0.005).run(model, images, target)
    assert sizes == [len(images)] * 6  # 5 steps + 1 final forward for the diagnostics
    sizes.clear()
    images_only = BIM(0.02, 5, 0.005)(model, images, target)
    handle.remove()
    assert sizes == [len(images)] * 5  # plain call: no diagnostics pass, exactly one forward per step
    assert torch.equal(images_only, with_diagnostics.adv)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_model_state_restored_and_no_parameter_grads(name):
    model, images, target = case("cnn", 5, 8)
    model.train()
    model.head.bias.requires_grad_(False)
    running_mean = model.features[1].running_mean.clone()
    make_attack(name)(model, images, target)
    assert model.training
    assert not model.head.bias.requires_grad and model.head.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model.features[1].running_mean, running_mean)  # BN ran in eval mode


def test_autocast_bf16_runs_within_budget():
    model, images, target = case("cnn", 5, 8)
    res = BIM(0.02, 8, 0.005, autocast="bf16").run(model, images, target)
    assert res.adv.dtype == torch.float32 and (res.adv - images).abs().max() <= 0.02 + 1e-6
    assert res.loss.mean() < summed_bce(model(images), target).mean()


def test_momentum_step_accumulates_l1_normalised_gradients():
    # gradients of very different size and sparsity: the L1 normalisation decides the sign of the sum
    gen = torch.Generator().manual_seed(0)
    g1 = torch.randn(4, 3, 4, 4, generator=gen)
    g2 = torch.randn(4, 3, 4, 4, generator=gen) * 100 * (torch.rand(4, 3, 4, 4, generator=gen) > 0.7)
    step = momentum_step(eps_iter=0.01, decay_factor=0.5)
    _, state = step(g1, torch.zeros_like(g1))
    update, state = step(g2, state)
    expected = 0.5 * advertorch_utils.normalize_by_pnorm(g1, p=1) + advertorch_utils.normalize_by_pnorm(
        g2, p=1
    )
    torch.testing.assert_close(state, expected)
    assert torch.equal(update, -0.01 * expected.sign())
    l2_weighted = 0.5 * advertorch_utils.normalize_by_pnorm(g1, p=2) + advertorch_utils.normalize_by_pnorm(
        g2, p=2
    )
    assert not torch.equal(update.sign(), -l2_weighted.sign())  # the test can tell the norms apart


def test_l1_ball_projection():
    torch.testing.assert_close(l1_ball(2.0)(torch.tensor([[3.0, -1.0]])), torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(
        l1_ball(1.0)(torch.tensor([[1.0, -1.0, 0.0]])), torch.tensor([[0.5, -0.5, 0.0]])
    )
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        [0.1, 1, 2, 3, 4, 5]
    ).view(-1, 1, 1, 1)
    proj = l1_ball(10.0)(x)
    assert torch.equal(proj[0], x[0])  # inside the ball: untouched
    torch.testing.assert_close(proj.flatten(1).abs().sum(1)[1:], torch.full((5,), 10.0))
    torch.testing.assert_close(proj, advertorch_utils.batch_l1_proj(x, 10.0), atol=1e-6, rtol=0)


def test_l2_ball_projection():
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * torch.tensor([0.01, 1, 5]).view(
        -1, 1, 1, 1
    )
    proj = l2_ball(1.0)(x)
    assert torch.equal(proj[0], x[0])
    torch.testing.assert_close(proj.flatten(1).norm(dim=1)[1:], torch.ones(2))
    torch.testing.assert_close(proj, advertorch_utils.clamp_by_pnorm(x, 2, 1.0))


@pytest.mark.parametrize(
    "make,argument",
    [
        (lambda: FGSM(eps=-0.1), "eps"),
        (lambda: FGM(eps=float("nan")), "eps"),
        (lambda: BIM(nb_iter=0), "nb_iter"),
        (lambda: PGD(nb_iter=2.5), "nb_iter"),
        (lambda: PGD(eps_iter=0.0), "eps_iter"),
        (lambda: MIFGSM(decay_factor=-1.0), "decay_factor"),
        (lambda: SLIDE(l1_sparsity=1.0), "l1_sparsity"),
        (lambda: SLIDE(eps=float("inf")), "eps"),
    ],
)
def test_bad_hyperparameters_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()


class NaNGradientWhereDark(torch.nn.Module):
    """Finite logits, but a NaN input gradient for images whose mean is below 0.5 (the torch.where pitfall)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3)) - 0.5
        bonus = torch.where(m > 0, torch.sqrt(m), torch.zeros_like(m))
        return self.inner(x) + 0.1 * bonus[:, None]


@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_non_finite_gradients_are_reported_per_sample(name, early_stop):
    model, images, target = case("cnn", 5, 8)
    images[:3] = 0.2 * images[:3]  # dark: NaN gradients
    images[3:] = 0.6 + 0.4 * images[3:]  # bright: finite
    res = make_attack(name, strong=True, early_stop=early_stop).run(
        NaNGradientWhereDark(model), images, target
    )
    assert res.grad_finite.tolist() == [False] * 3 + [True] * 3
