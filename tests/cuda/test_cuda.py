"""The checks that need a GPU (``pytest -m cuda``; skipped without CUDA): the strict loops equal AdverTorch on CUDA,
bf16 autocast moves the success table by at most 1 point on ResNet-101 at 448², and ML-DP's and MLA-LP's reference
variants give on CUDA what they give on the CPU."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from mlattack.attacks import MLALP, MLDP, PGD
from mlattack.scenarios import predicted_positive, scenario_success, scenario_thresholds
from tests.attacks.models import make_cnn, make_images

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


@pytest.fixture
def exact_cuda():
    """fp32 convolutions and matmuls in fp32 (not TF32), deterministic cuDNN kernels; restored afterwards."""
    flags = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    ) = flags


@pytest.mark.parametrize("kind,num_classes,size", [("cnn", 5, 8), ("linear", 20, 16)])
@pytest.mark.parametrize("name", ["FGSM", "FGM", "BIM", "PGD", "MIFGSM", "SLIDE", "SLIDE_rand"])
def test_strict_loops_equal_advertorch_on_cuda(name, kind, num_classes, size, exact_cuda):
    from tests.attacks.test_advertorch_parity import REFERENCE, _assert_same_images
    from tests.attacks.test_gradient_attacks import case

    model, images, _ = case(kind, num_classes, size)
    model, images = model.to(CUDA), images.to(CUDA)
    target = (torch.rand(len(images), num_classes, generator=torch.Generator().manual_seed(5)) > 0.4).float()
    ours, theirs = REFERENCE[name]
    _assert_same_images(ours(), theirs(model), model, images, target.to(CUDA))


class Standardised(nn.Module):
    """A random ResNet-101 with its logits standardised per label on one batch (unsaturated, about half shown)."""

    def __init__(self, net: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        with torch.no_grad():
            z = torch.cat([net(b) for b in x.split(32)])
        self.register_buffer("mean", z.mean(0))
        self.register_buffer("std", z.std(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net(x) - self.mean) / self.std


def test_bf16_success_table_within_one_point_on_resnet101():
    """Random-init ResNet-101 (nothing is downloaded) at 448², 128 samples, PGD with the study's settings towards
    every label; the scenario table (success % at n = 0..7) of bf16 autocast against fp32 (TF32 convolutions, the
    default on CUDA). One sample is 0.78 points, so at most one sample may change scenario."""
    torch.manual_seed(0)
    net = torchvision.models.resnet101(weights=None)
    net.fc = nn.Linear(net.fc.in_features, 20)
    x = torch.rand(128, 3, 448, 448, generator=torch.Generator().manual_seed(0)).to(CUDA)
    model = Standardised(net.to(CUDA).eval(), x).eval()
    with torch.no_grad():
        truth = torch.cat([predicted_positive(model(b)) for b in x.split(32)])
    thresholds = scenario_thresholds(float(truth.sum(1).float().mean()), 20)
    tables = {}
    for autocast in (None, "bf16"):
        shown = []
        for lo in range(0, len(x), 32):
            torch.manual_seed(lo)  # the same random starts for both precisions
            attack = PGD(eps=0.3, nb_iter=30, eps_iter=0.001, autocast=autocast)
            adv = attack.run(model, x[lo : lo + 32], torch.ones(32, 20, device=CUDA)).adv
            with torch.no_grad():
                shown.append(predicted_positive(model(adv)).sum(1))
        tables[autocast] = 100 * scenario_success(torch.cat(shown), thresholds).float().mean(0)
    diff = (tables[None] - tables["bf16"]).abs().max().item()
    assert diff <= 1.0, (tables[None].tolist(), tables["bf16"].tolist())


@pytest.mark.parametrize(
    "attack",
    [
        lambda: MLDP(max_iter=5, variant="reference"),
        lambda: MLDP(max_iter=5, variant="corrected"),
        lambda: MLALP(max_iter=5, variant="reference"),
    ],
    ids=["MLDP-reference", "MLDP-corrected", "MLALP-reference"],
)
def test_per_label_attacks_give_on_cuda_what_they_give_on_the_cpu(attack, exact_cuda):
    """Small CNN, 10 samples (MLA-LP's reference couples a group of 10): the same images up to float rounding of
    the device's kernels, the same iterations."""
    model, x = make_cnn(6), make_images(10, 12)
    target = torch.ones(10, 6)
    cpu = attack().run(model, x, target)
    gpu = attack().run(model.to(CUDA), x.to(CUDA), target.to(CUDA))
    assert (cpu.iterations > 0).any()
    torch.testing.assert_close(gpu.adv.cpu(), cpu.adv, rtol=0, atol=1e-4)
    assert torch.equal(gpu.iterations.cpu(), cpu.iterations)
    assert torch.equal(gpu.reached.cpu(), cpu.reached)
