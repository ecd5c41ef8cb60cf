"""FGSM, FGM, BIM, PGD, MI-FGSM and SLIDE are bit-identical to the real AdverTorch 0.2.3 (the study's library), on
our test models and as the study called it (sigmoid outputs, its clamped BCE)."""

from __future__ import annotations

import pytest
import torch

from mlattack.attacks import BIM, FGM, FGSM, MIFGSM, PGD, SLIDE
from mlattack.attacks.losses import summed_bce
from mlattack.evaluation.runner import load_attack_config
from tests.attacks.advertorch_compat import attacks as advertorch
from tests.attacks.test_gradient_attacks import CASES, case


def _summed_loss(logits, target):
    return summed_bce(logits, target).sum()  # AdverTorch's loss_fn returns one scalar for the batch


def _advertorch(
    name: str, model, eps: float, nb_iter: int = 1, eps_iter: float = 0.0, loss_fn=_summed_loss, **kw
):
    """AdverTorch's attack class for ``name``, targeted (it descends the loss) and clipped to [0, 1]."""
    common = {"loss_fn": loss_fn, "eps": eps, "clip_min": 0.0, "clip_max": 1.0, "targeted": True}
    if name in ("FGSM", "FGM"):
        cls = {"FGSM": advertorch.GradientSignAttack, "FGM": advertorch.GradientAttack}[name]
        return cls(model, **common)
    cls = {
        "BIM": advertorch.LinfBasicIterativeAttack,
        "PGD": advertorch.PGDAttack,  # the study's class; its defaults are L-inf with a random start
        "MIFGSM": advertorch.MomentumIterativeAttack,
        "SLIDE": advertorch.SparseL1DescentAttack,
    }[name]
    return cls(model, nb_iter=nb_iter, eps_iter=eps_iter, **common, **kw)


REFERENCE = {  # name: (mlattack attack, AdverTorch attack for a model), the settings of SETTINGS
    "FGSM": (lambda: FGSM(0.05), lambda m: _advertorch("FGSM", m, 0.05)),
    "FGM": (lambda: FGM(0.5), lambda m: _advertorch("FGM", m, 0.5)),
    "BIM": (lambda: BIM(0.02, 8, 0.005), lambda m: _advertorch("BIM", m, 0.02, 8, 0.005)),
    "PGD": (lambda: PGD(0.02, 8, 0.005), lambda m: _advertorch("PGD", m, 0.02, 8, 0.005)),
    "MIFGSM": (
        lambda: MIFGSM(0.02, 8, 0.005, decay_factor=1.0),
        lambda m: _advertorch("MIFGSM", m, 0.02, 8, 0.005, decay_factor=1.0),
    ),
    "SLIDE": (
        lambda: SLIDE(3.0, 8, 1.0, l1_sparsity=0.9),
        lambda m: _advertorch("SLIDE", m, 3.0, 8, 1.0, l1_sparsity=0.9),
    ),
    "SLIDE_rand": (
        lambda: SLIDE(3.0, 8, 1.0, l1_sparsity=0.9, rand_init=True),
        lambda m: _advertorch("SLIDE", m, 3.0, 8, 1.0, l1_sparsity=0.9, rand_init=True),
    ),
}


def _assert_same_images(ours_attack, theirs_attack, model, images, target):
    torch.manual_seed(11)  # same random start for both (PGD, SLIDE_rand: both draw from the global RNG)
    ours = ours_attack(model, images, target)
    torch.manual_seed(11)
    theirs = theirs_attack.perturb(images, target)
    assert not torch.equal(ours, images)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()  # bit-identical


@pytest.mark.parametrize("kind,num_classes,size", CASES)
@pytest.mark.parametrize("name", list(REFERENCE))
def test_equals_advertorch(name, kind, num_classes, size):
    model, images, _ = case(kind, num_classes, size)
    target = (torch.rand(len(images), num_classes, generator=torch.Generator().manual_seed(5)) > 0.4).float()
    ours, theirs = REFERENCE[name]
    _assert_same_images(ours(), theirs(model), model, images, target)


class Probabilities(torch.nn.Module):
    """The study's victims output sigmoid probabilities, and its attack loss takes them."""

    def __init__(self, logits_model: torch.nn.Module) -> None:
        super().__init__()
        self.logits_model = logits_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits_model(x))


def _study_loss(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The study's attack loss on probabilities: BCE with p clamped to [1e-6, 1 - 1e-6], summed over everything."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(target * p.log() + (1 - target) * (1 - p).log()).sum()


# The values the study's driver passes to AdverTorch (src/attack_model.py): eps per attack, nb_iter 30 and
# eps_iter 0.001 for the iterative L-inf ones, SparseL1DescentAttack with eps 300 and step 30 (class default
# l1_sparsity 0.95, no random start), PGDAttack with its default random start, MomentumIterativeAttack decay 1.
STUDY = {
    "FGSM": {"eps": 0.3},
    "FGM": {"eps": 1.0},
    "BIM": {"eps": 0.1, "nb_iter": 30, "eps_iter": 0.001},
    "PGD": {"eps": 0.3, "nb_iter": 30, "eps_iter": 0.001},
    "MIFGSM": {"eps": 0.3, "nb_iter": 30, "eps_iter": 0.001},
    "SLIDE": {"eps": 300.0, "nb_iter": 30, "eps_iter": 30.0},
}


@pytest.mark.parametrize("name", list(STUDY))
def test_study_configs_equal_advertorch_as_the_study_called_it(name):
    """configs/attack/<name>.yaml on a logits model == AdverTorch with the study's arguments, its probability
    model and its loss on probabilities. (At this size SLIDE's 300 L1 budget never binds: its steps pile onto
    pixels already at the box, as in AdverTorch; the projection is compared in test_equals_advertorch.)"""
    model, images, _ = case("cnn", 5, 16)
    target = (torch.rand(len(images), 5, generator=torch.Generator().manual_seed(5)) > 0.4).float()
    ours = load_attack_config(f"configs/attack/{name.lower()}.yaml")
    theirs = _advertorch(name, Probabilities(model), loss_fn=_study_loss, **STUDY[name])
    _assert_same_images(ours, theirs, model, images, target)
