"""Scenario thresholds and success on hand-made label counts."""

import pytest
import torch

from mlattack.evaluation.metrics import ShowManyLabels, perturbation_norms
from mlattack.scenarios import exp_labels, scenario_success, scenario_thresholds


def test_exp_labels_follow_avg_plus_power_of_two_capped_at_c():
    # VOC-like: avgLabels 1.4, C = 20 -> 2.4, 3.4, 5.4, 9.4, 17.4, 20 (capped), 20, 20
    assert exp_labels(1.4, 20) == pytest.approx([2.4, 3.4, 5.4, 9.4, 17.4, 20.0, 20.0, 20.0])
    assert scenario_thresholds(1.4, 20).tolist() == [2, 3, 5, 9, 17, 20, 20, 20]
    assert scenario_thresholds(2.9, 80).tolist() == [3, 4, 6, 10, 18, 34, 66, 80]


def test_success_means_at_least_int_exp_labels():
    thresholds = scenario_thresholds(1.4, 20)
    shown = torch.tensor([1, 2, 3, 9, 17, 20])
    ok = scenario_success(shown, thresholds)
    assert ok.tolist() == [
        [False] * 8,
        [True] + [False] * 7,
        [True, True] + [False] * 6,
        [True] * 4 + [False] * 4,
        [True] * 5 + [False] * 3,
        [True] * 8,
    ]


def test_metric_accumulates_like_a_direct_computation():
    thresholds = scenario_thresholds(2.0, 6)  # 3, 4, 6, 6, ...
    m = ShowManyLabels(6, thresholds)
    clean = torch.zeros(4, 3, 2, 2)
    adv = clean + torch.tensor([0.1, 0.2, 0.0, 0.4]).view(4, 1, 1, 1)
    shown = torch.tensor([3, 6, 2, 4])
    norms = perturbation_norms(clean, adv)
    m.update(
        shown[:2],
        {k: v[:2] for k, v in norms.items()},
        torch.tensor([5, 7]),
        torch.tensor([1.0, 1.0]),
        torch.tensor([False, True]),
    )
    m.update(
        shown[2:],
        {k: v[2:] for k, v in norms.items()},
        torch.tensor([9, 9]),
        torch.tensor([2.0, 2.0]),
        torch.tensor([False, False]),
        valid=torch.tensor([True, False]),
    )
    out = m.compute()
    # sample 3 failed numerically: attacked, never a success, excluded from means
    assert out["success_rate_n0"] == pytest.approx(2 / 4)  # shows >= 3: samples 0, 1
    assert out["success_rate_n1"] == pytest.approx(1 / 4)  # >= 4: sample 1 only (sample 3 invalid)
    assert out["success_rate_n7"] == pytest.approx(1 / 4)
    assert out["labels_shown_mean"] == pytest.approx((3 + 6 + 2) / 3)
    assert out["linf_mean"] == pytest.approx((0.1 + 0.2 + 0.0) / 3)
    assert out["l2_mean"] == pytest.approx((0.1 * 12**0.5 + 0.2 * 12**0.5) / 3)
    assert out["rmsd_mean"] == pytest.approx((0.1 + 0.2) * 255 / 3)
    assert out["iterations_mean"] == pytest.approx(30 / 4)
    assert out["num_failed"] == 1 and out["target_reached_rate"] == pytest.approx(0.25)


def test_prediction_rule_is_the_studys_float32_sigmoid_threshold() -> None:
    """A logit just below 0 has sigmoid exactly 0.5 in float32: the study's evaluation counts that label shown."""
    from mlattack.scenarios import predicted_positive

    logits = torch.tensor([[-3e-8, -1e-6, 0.0, 2.0, -2.0]])
    assert predicted_positive(logits).tolist() == [[True, False, True, True, False]]
    assert (logits >= 0).sum() == 2  # the logit-sign rule would count two
