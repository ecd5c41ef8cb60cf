"""configs/ablation-mlalp.yaml through the `mlattack attack` parser: every row is the reference with exactly the
switches it names changed, and the rows issue 23 added (no downward threshold, aim past the threshold, both) change
the LP step the way their names say, on a linear network whose logits are set by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlattack.attacks import MLALP
from mlattack.cli.attack import attack_parser
from mlattack.evaluation.specs import build_specs

CONFIG = "configs/ablation-mlalp.yaml"


def ablation_rows() -> dict[str, MLALP]:
    parser = attack_parser()
    cfg = parser.instantiate_classes(parser.parse_args(["--config", CONFIG, "--model", "models:/unused/1"]))
    return {name: attack for (name, attack, _), _ in build_specs(cfg.attacks)}


def test_each_row_is_the_reference_with_only_its_own_switches_changed() -> None:
    rows = ablation_rows()
    ref = rows["MLALP-reference"].hyperparameters()
    assert rows["MLALP-corrected"].variant == "corrected"
    named = {
        "MLALP-no-downward-threshold": {"threshold_downward": False},
        "MLALP-aim-past-threshold": {"aim_at_threshold": False},
        "MLALP-aim-past-no-downward": {"aim_at_threshold": False, "threshold_downward": False},
        "MLALP-no-threshold-update": {"threshold_step": 0.0},
    }
    for name, attack in rows.items():
        if name in ("MLALP-reference", "MLALP-corrected"):
            continue
        diff = {k: v for k, v in attack.hyperparameters().items() if ref.get(k) != v}
        assert diff == named.get(name, diff) and len(diff) >= 1, name
        assert set(diff) <= set(ref), name


def hand_set_linear(logits: list[float], size: int = 4) -> tuple[nn.Module, torch.Tensor]:
    """A linear network and one image on which its logits are exactly ``logits`` (label by label)."""
    torch.manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(1, 3, size, size)
    lin = nn.Linear(3 * size * size, len(logits)).double()
    with torch.no_grad():  # unit-normal weights: a logit moves by ~1 for an L-inf step of ~0.03
        lin.weight.normal_()
        lin.bias += torch.tensor(logits, dtype=torch.float64) - lin(x.flatten(1).double())[0]
    model = nn.Sequential(nn.Flatten(), lin).float().eval()
    return model, x


def one_step(attack: MLALP, logits: list[float], threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The LP step of the first iteration at a given (already lowered) threshold: (|r|inf, p after the step)."""
    model, x = hand_set_linear(logits)
    target = torch.ones(1, len(logits))
    with torch.no_grad():
        z = model(x)
    thr = torch.full(target.shape, threshold, dtype=torch.float64)
    attack._events = {"zero_rows": 0}  # perturb() sets it up; _steps counts into it
    r, failed = attack._steps(model, x.double(), z, thr, target)
    assert not failed.any()
    x1 = x.double() + r.view_as(x)
    assert x1.min() >= 0 and x1.max() <= 1  # the LP's own step, no clipping
    with torch.no_grad():
        return r.abs().max(), torch.sigmoid(model(x1.float()).double())[0]


# two hidden labels at p = 0.40 and 0.35, one shown at p = 0.88
LOGITS = [-0.4, -0.6, 2.0]


def test_no_downward_threshold_keeps_asking_for_a_margin_past_one_half() -> None:
    rows = ablation_rows()
    # threshold lowered to 0.3: the reference's rows ask only p >= 0.3, which both hidden labels already meet
    step, p = one_step(rows["MLALP-reference"], LOGITS, 0.3)
    assert step == 0 and (p[:2] < 0.5).all()
    # a margin past 0.5 (p >= 0.7 aimed at through the linearised loss): both hidden labels pass 0.5
    step, p = one_step(rows["MLALP-no-downward-threshold"], LOGITS, 0.3)
    assert step > 0 and (p > 0.5).all()


@pytest.mark.parametrize(("row", "threshold", "aim"), [
    ("MLALP-aim-past-threshold", 0.5, 0.55),
    ("MLALP-aim-past-no-downward", 0.3, 0.75),
])  # fmt: skip
def test_aiming_past_the_threshold_lands_past_it(row: str, threshold: float, aim: float) -> None:
    rows = ablation_rows()
    _, p_ref = one_step(rows["MLALP-reference"], LOGITS, 0.5)
    assert (p_ref[:2] < 0.5).any()  # the linearised loss stops short of p = 0.5 on a binding row
    step, p = one_step(rows[row], LOGITS, threshold)
    assert step > 0 and (p >= aim - 1e-4).all()
