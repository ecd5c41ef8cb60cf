"""95 % intervals for success rates: one home, so every table, plot and MLflow description states the same bounds.

A rate over N = 10 samples moves in steps of 10 points and its sampling error is larger than that; printing the
Wilson score interval beside it keeps "30 %" and "40 %" from reading as different results. Wilson (not the normal
approximation) because it stays inside [0, 1] and is honest at 0/N and N/N, where the study's tables often sit.
"""

from __future__ import annotations

from scipy.stats import binomtest

LEVEL = 0.95


def wilson_interval(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """(low, high) as fractions in [0, 1]; (0.0, 1.0) when there are no trials (nothing is known)."""
    successes, trials = int(successes), int(trials)
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    ci = binomtest(successes, trials).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def format_rate(successes: int, trials: int, digits: int = 0) -> str:
    """'40 % [17–69]': the rate in percent with its 95 % Wilson interval, for tables and descriptions."""
    if int(trials) == 0:
        return "– (N = 0)"
    low, high = wilson_interval(successes, trials)
    return format_bounds(100.0 * int(successes) / int(trials), 100 * low, 100 * high, digits)


def format_bounds(rate: float, low: float, high: float, digits: int = 0) -> str:
    """The same '40 % [17–69]' text from a rate and bounds already in percent (tables that store the bounds)."""
    return f"{rate:.{digits}f} % [{low:.{digits}f}–{high:.{digits}f}]"
