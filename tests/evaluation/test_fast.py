"""What fast mode attacks: the network itself (exact), or a copy with BatchNorm folded, channels_last, frozen (the
original left as it was)."""

import pytest
import torch
from torch import nn

from mlattack.attacks import BIM
from mlattack.attacks.continuous import run_continuous
from mlattack.evaluation.fast import attack_network, fast_attack_copy, uses_channels_last
from mlattack.evaluation.settings import AttackSettings, run_key
from mlattack.models.backbones import tiny_cnn


def trained_bn_net() -> nn.Module:
    """tiny_cnn + linear head, its BatchNorms given non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    net = nn.Sequential(tiny_cnn((8, 16, 16, 32)), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 6))
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, 3, 32, 32) * 2)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y.mean((2, 3)) if bool(y.sum() > 0) else -y.mean((2, 3))


def test_fast_copy_computes_the_same_function_and_gradients_without_touching_the_original():
    net = trained_bn_net()
    flags = [p.requires_grad for p in net.parameters()]
    fast = fast_attack_copy(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original still has them
    assert [p.requires_grad for p in net.parameters()] == flags and all(flags)
    assert not any(p.requires_grad for p in fast.parameters())
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)

    x = torch.rand(4, 3, 32, 32)
    xs = [x.clone().requires_grad_(), x.contiguous(memory_format=torch.channels_last).requires_grad_()]
    outs = [m(v) for m, v in zip((net, fast), xs, strict=True)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    grads = [torch.autograd.grad(o.sigmoid().sum(), v)[0] for o, v in zip(outs, xs, strict=True)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-6)
    assert float(outs[0].detach().abs().max()) > 0.1  # not a degenerate all-zero network


def test_untraceable_network_falls_back_to_an_unfolded_copy():
    torch.manual_seed(0)
    net = Branchy().eval()
    fast = fast_attack_copy(net)
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x))


@pytest.mark.parametrize("fold_bn", [True, False])
def test_options_can_be_turned_off(fold_bn: bool):
    net = trained_bn_net()
    fast = fast_attack_copy(net, channels_last=False, fold_bn=fold_bn)
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()) == (not fold_bn)
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous()


def test_attack_network_exact_is_the_network_and_the_copies_are_folded():
    net = trained_bn_net()
    assert attack_network(net, "exact") is net and not uses_channels_last("exact")
    folded = attack_network(net, "folded")
    assert folded is not net and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert uses_channels_last("folded") and uses_channels_last("compiled")
    with pytest.raises(ValueError, match="exact, folded or compiled"):
        attack_network(net, "fastest")


def test_exact_fast_network_follows_paper_mode_until_early_stop_ends_a_sample():
    """Fast mode on the exact network: a sample that runs its whole budget gets paper mode's image bit for bit
    (same arithmetic, whatever the batch around it); one that stops shows its target. So no sample loses."""
    net = trained_bn_net()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        target = (net(x) > 0).float()
    # even rows: one label more than the clean prediction (reached within the budget); odd rows: every label
    for i in range(0, 12, 2):
        target[i, (target[i] == 0).nonzero()[0]] = 1.0
    target[1::2] = 1.0
    paper = BIM(eps=0.3, nb_iter=15, eps_iter=0.02)
    strict = torch.cat([paper.run(net, x[i : i + 4], target[i : i + 4]).adv for i in range(0, 12, 4)])
    fast = BIM(eps=0.3, nb_iter=15, eps_iter=0.02, early_stop=True)
    res = run_continuous(fast, attack_network(net, "exact"), x, target, list(range(12)), 0, slots=4)
    stopped = res.iterations < 15
    assert 3 <= int(stopped.sum()) < 12  # samples leave mid-run, so the batch around the others changes
    assert torch.equal(res.adv[~stopped], strict[~stopped])
    with torch.no_grad():
        shown = net(res.adv) > 0
    assert (shown[stopped] == (target[stopped] > 0.5)).all()


def test_fast_network_is_a_setting_of_fast_runs_only():
    base = {"selection_key": "s", "hyperparameters": {}, "sample_counts": [8]}
    fast = [
        run_key(**base, settings=AttackSettings(mode="fast", fast_network=k)) for k in ("exact", "folded")
    ]
    paper = [run_key(**base, settings=AttackSettings(fast_network=k)) for k in ("exact", "folded")]
    assert fast[0] != fast[1] and paper[0] == paper[1]
    with pytest.raises(ValueError, match="fast_network must be one of"):
        AttackSettings(mode="fast", fast_network="fastest")


def test_fast_network_in_paper_mode_is_named_as_ignored(caplog):
    with caplog.at_level("WARNING", logger="mlattack.evaluation.settings"):
        AttackSettings(mode="paper", fast_network="folded")
    assert "applies to mode 'fast' only" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mlattack.evaluation.settings"):
        AttackSettings(mode="fast", fast_network="folded")
        AttackSettings(mode="paper")
    assert caplog.text == ""
