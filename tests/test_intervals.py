"""The Wilson interval against its closed form, written out independently of scipy."""

import math

import pytest

from mlattack.intervals import format_rate, wilson_interval


def closed_form(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (4, 10), (10, 10), (7, 50), (1, 1)])
def test_matches_closed_form(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    ref_low, ref_high = closed_form(k, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-9)
    assert high == pytest.approx(min(ref_high, 1.0), abs=1e-9)


def test_thirty_and_forty_percent_overlap_at_n_10() -> None:
    """The issue's example: at N = 10 the two rates are not distinguishable."""
    assert wilson_interval(3, 10)[1] > wilson_interval(4, 10)[0]


def test_format_and_bad_input() -> None:
    assert format_rate(4, 10) == "40 % [17–69]"
    assert format_rate(0, 0) == "– (N = 0)"
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
