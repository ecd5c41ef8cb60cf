"""Preprocessing defences: known-input correctness (oracles: PIL's JPEG, scipy's median filter), the wrapper's
shapes, the plain gradient they mask, BPDA's gradient and EOT's averaging."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

from mlattack.attacks import APGD, PGD
from mlattack.defences import JPEG, BitDepth, Defended, MedianSmoothing
from tests.evaluation.toy import Identity


class Conv(nn.Module):
    """A small nonlinear network (the gradient at a point depends on the point)."""

    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3)))


def images(n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


STEPS = [JPEG(75), JPEG(40, 90), BitDepth(3), MedianSmoothing(3)]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.label())
def test_defended_model_returns_logits_of_the_network_at_the_preprocessed_image(step):
    net, x = Conv(), images()
    torch.manual_seed(3)
    out = Defended(net, step)(x)
    torch.manual_seed(3)
    expected = net(step.transform(x))
    assert out.shape == (2, 4)
    assert torch.equal(out, expected)
    z = step.transform(x)
    assert z.shape == x.shape and z.dtype == x.dtype and float(z.min()) >= 0 and float(z.max()) <= 1


def test_jpeg_matches_pil_round_trip():
    x = images(1, 32)
    u8 = (x[0] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=60)
    pil = torch.from_numpy(np.asarray(Image.open(buf)).copy()).permute(2, 0, 1).float() / 255
    ours = JPEG(60).transform(x)[0]
    # same codec family, possibly other DCT/upsampling choices: within 2 levels on average, never far off
    assert float((ours - pil).abs().mean()) < 2 / 255
    assert float((ours - x[0]).abs().mean()) > 1 / 255  # it did compress (quality 60 on noise is lossy)


def test_jpeg_keeps_a_flat_colour():
    x = torch.full((1, 3, 16, 16), 0.0)
    x[:, 0], x[:, 1], x[:, 2] = 200 / 255, 40 / 255, 90 / 255
    assert float((JPEG(90).transform(x) - x).abs().max()) <= 3 / 255


def test_random_jpeg_quality_is_drawn_per_sample_in_range():
    step = JPEG(20, 95)
    torch.manual_seed(0)
    qualities = step.qualities(500)
    assert min(qualities) >= 20 and max(qualities) <= 95 and len(set(qualities)) > 30
    assert JPEG(75).qualities(3) == [75, 75, 75] and not JPEG(75).randomised and step.randomised
    with pytest.raises(ValueError, match="quality"):
        JPEG(90, 50)


def test_bit_depth_rounds_to_the_grid():
    x = torch.tensor([0.0, 0.2, 0.49, 0.51, 0.9, 1.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert BitDepth(1).transform(x)[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    three = BitDepth(3).transform(torch.tensor([3 / 7, 0.5, 0.07, 0.08]).view(1, 1, 1, 4))
    assert torch.allclose(
        three.flatten(), torch.tensor([3 / 7, 4 / 7, 0.0, 1 / 7])
    )  # round half to even: 3.5 -> 4
    with pytest.raises(ValueError, match="bits"):
        BitDepth(0)


@pytest.mark.parametrize("k", [3, 5])
def test_median_matches_scipy(k):
    x = images(2, 12)
    ours = MedianSmoothing(k).transform(x)
    ref = ndimage.median_filter(x.numpy(), size=(1, 1, k, k), mode="mirror")
    assert torch.equal(ours, torch.from_numpy(ref))
    with pytest.raises(ValueError, match="odd"):
        MedianSmoothing(4)


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).logsumexp(1).sum(), x)
    return grad


@pytest.mark.parametrize("step", [JPEG(75), BitDepth(3)], ids=lambda s: s.label())
def test_the_plain_gradient_through_a_codec_or_rounding_is_zero(step):
    assert float(loss_of(Defended(Conv(), step), images()).abs().max()) == 0.0


@pytest.mark.parametrize("step", [JPEG(75), BitDepth(3), MedianSmoothing(3)], ids=lambda s: s.label())
def test_bpda_gradient_is_the_networks_gradient_at_the_preprocessed_image(step):
    net, x = Conv(), images()
    adaptive = Defended(net, step, adaptive=True).attack_model()
    z = step.transform(x)
    assert torch.allclose(loss_of(adaptive, x), loss_of(net, z), rtol=1e-6, atol=1e-9)
    assert float(loss_of(adaptive, x).abs().max()) > 0
    assert Defended(net, step, adaptive=False).attack_model() is not adaptive  # plain: the model itself


def test_eot_averages_logits_and_gradients_over_draws():
    net, x, step, k = Conv(), images(), JPEG(30, 95), 3
    model = Defended(net, step, adaptive=True, eot_samples=k).attack_model()
    torch.manual_seed(7)
    draws = [step.transform(x) for _ in range(k)]
    assert not torch.equal(draws[0], draws[1])  # the draws differ
    expected = torch.stack([net(z) for z in draws]).mean(0)
    grads = torch.stack([loss_of(net, z) for z in draws])
    torch.manual_seed(7)
    assert torch.allclose(model(x), expected, atol=1e-6)
    torch.manual_seed(7)
    x1 = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x1).sum(), x1)
    net_grads = []
    for z in draws:
        z = z.clone().requires_grad_(True)
        net_grads.append(torch.autograd.grad(net(z).sum(), z)[0])
    assert torch.allclose(g, torch.stack(net_grads).mean(0), atol=1e-7)
    assert grads.shape[0] == k
    # a deterministic step is not averaged: one pass whatever eot_samples says
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    Defended(net, BitDepth(3), adaptive=True, eot_samples=5).attack_model()(x)
    assert len(calls) == 1


def test_settings_name_the_defence_and_how_it_is_attacked():
    d = Defended(Conv(), JPEG(50, 90), adaptive=True, eot_samples=4)
    assert d.settings() == {"defence": "JPEG", "label": "jpeg50-90", "quality": 50, "max_quality": 90,
                            "adaptive": True, "eot_samples": 4}  # fmt: skip
    assert Defended(Conv(), MedianSmoothing(3)).settings()["label"] == "median3"
    with pytest.raises(ValueError, match="eot_samples"):
        Defended(Conv(), JPEG(), eot_samples=0)


class NormConv(Conv):
    """Conv with a BatchNorm whose running statistics are unlike any batch's: in train mode the logits change, and
    every forward pass moves the running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(4)
        with torch.no_grad():
            self.norm.running_mean.fill_(0.3)
            self.norm.running_var.fill_(2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.norm(self.conv(x))).mean(dim=(2, 3)))


ATTACKS = {
    "apgd": lambda: APGD(eps=0.03, nb_iter=6),
    "pgd": lambda: PGD(
        eps=0.03, nb_iter=4, eps_iter=0.01, rand_init=True, generator=torch.Generator().manual_seed(3)
    ),
}


@pytest.mark.parametrize("make", ATTACKS.values(), ids=ATTACKS.keys())
def test_bpda_through_an_identity_step_is_the_plain_attack_exactly(make):
    net, x = NormConv().eval(), images(4)
    stats = net.norm.running_mean.clone()
    target = torch.ones(len(x), net.num_classes)
    plain = Defended(net, Identity()).eval()
    adaptive = Defended(net, Identity(), adaptive=True).eval()
    adv = {name: make()(model, x, target) for name, model in
           (("plain", plain), ("bpda", adaptive.attack_model()), ("bare", net))}  # fmt: skip
    assert torch.equal(adv["plain"], adv["bpda"]) and torch.equal(adv["plain"], adv["bare"])
    assert not torch.equal(adv["plain"], x)  # the attack moved
    # the attack leaves every module as it found it: a wrapper born in train mode must not put the network in
    # train mode (BatchNorm would then judge on batch statistics and move its running ones)
    assert not any(m.training for m in adaptive.modules())
    assert torch.equal(net.norm.running_mean, stats)
