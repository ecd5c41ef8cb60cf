"""The study's eight "show many labels" scenarios: one home for the scoring that the attack loop, the MLflow
record and the report share.

Scenario n asks the adversarial prediction to show at least ``int(expLabels_n)`` labels, with
``expLabels_n = min(avgLabels + 2**n, C)``; avgLabels is the mean number of ground-truth labels of the attacked
samples and C the number of classes. One adversarial image per sample serves all scenarios.
"""

from __future__ import annotations

import torch

NUM_SCENARIOS = 8

#: the internal name of each scenario's success rate (``success_rate_n0`` ...), in scenario order
SUCCESS_RATE_KEYS = tuple(f"success_rate_n{n}" for n in range(NUM_SCENARIOS))


def exp_labels(avg_labels: float, num_classes: int, num_scenarios: int = NUM_SCENARIOS) -> list[float]:
    """expLabels_n for n = 0..num_scenarios-1 (capped at the number of classes)."""
    if num_classes <= 0:
        raise ValueError(f"num_classes must be > 0, got {num_classes}")
    return [min(avg_labels + 2.0**n, float(num_classes)) for n in range(num_scenarios)]


def scenario_thresholds(
    avg_labels: float, num_classes: int, num_scenarios: int = NUM_SCENARIOS
) -> torch.Tensor:
    """(num_scenarios,) long: the least number of shown labels that counts as a success in each scenario."""
    return torch.tensor(
        [int(e) for e in exp_labels(avg_labels, num_classes, num_scenarios)], dtype=torch.long
    )


def predicted_positive(logits: torch.Tensor) -> torch.Tensor:
    """(N, C) bool: the study's prediction rule, float32 sigmoid >= 0.5. It equals ``logit >= 0`` except for
    logits in (-6e-8, 0), whose sigmoid rounds to exactly 0.5: attacks that land labels on the boundary (ML-DP aims
    at 0.5) are judged there, so the loop and the selection use this rule, as the study's evaluation did."""
    return torch.sigmoid(logits.float()) >= 0.5


def scenario_success(labels_shown: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(N, S) bool: sample i succeeds in scenario n when it shows >= thresholds[n] labels."""
    return labels_shown.long().unsqueeze(1) >= thresholds.to(labels_shown.device).unsqueeze(0)
