"""The three per-label Jacobian strategies give the same matrix, and that matrix is the per-sample Jacobian."""

from __future__ import annotations

import pytest
import torch
from torch.func import jacrev

from mlattack.attacks import jacobian
from mlattack.attacks.jacobian import STRATEGIES, default_strategy, label_jacobian
from tests.attacks.models import make_cnn, make_images


@pytest.mark.parametrize("chunk", [None, 3])
def test_every_strategy_equals_the_per_sample_jacobian(chunk: int | None) -> None:
    net, x = make_cnn(7), make_images(3, 8)
    expected = torch.stack([jacrev(lambda u: net(u[None])[0])(xi) for xi in x])  # (N, C, 3, 8, 8)
    results = {s: label_jacobian(net, x, chunk_size=chunk, strategy=s) for s in STRATEGIES}
    for name, (values, jac) in results.items():
        assert jac.shape == (3, 7, 3, 8, 8), name
        torch.testing.assert_close(values, net(x).detach(), rtol=0, atol=0, msg=name)
        torch.testing.assert_close(jac, expected, rtol=1e-5, atol=1e-6, msg=name)
        assert not jac.requires_grad and not values.requires_grad
    # the loop and autograd's batched pullback run the same backward kernels per cotangent
    torch.testing.assert_close(results["loop"][1], results["batched"][1], rtol=1e-6, atol=1e-7)


def test_the_default_is_per_device_and_the_environment_overrides_it(monkeypatch) -> None:
    monkeypatch.delenv(jacobian.ENV, raising=False)
    assert default_strategy(torch.device("cpu")) == jacobian.DEFAULTS["cpu"]
    monkeypatch.setenv(jacobian.ENV, "batched")
    assert default_strategy(torch.device("cpu")) == "batched"
    monkeypatch.setenv(jacobian.ENV, "fastest")
    with pytest.raises(ValueError, match="MLATTACK_JACOBIAN='fastest'"):
        default_strategy(torch.device("cpu"))
    with pytest.raises(ValueError, match="strategy must be one of"):
        label_jacobian(make_cnn(2), make_images(1, 4), strategy="jvp")
