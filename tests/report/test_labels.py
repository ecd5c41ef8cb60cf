"""The label analysis' correlations (scipy.stats): the textbook definitions, and NaN wherever they are undefined."""

import warnings

import numpy as np
import pandas as pd
import pytest

from mlattack.report.labels import analyse_labels, pearson, spearman


def textbook_pearson(a: np.ndarray, b: np.ndarray) -> float:
    da, db = a - a.mean(), b - b.mean()
    return float((da * db).sum() / np.sqrt((da**2).sum() * (db**2).sum()))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their positions."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    return np.array([ranks[x == v].mean() for v in x])


def test_pearson_and_spearman_follow_their_definitions_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.integers(0, 4, 9).astype(float)  # many ties
        b = np.round(rng.normal(size=9), 1)
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            continue
        assert pearson(a, b) == pytest.approx(textbook_pearson(a, b), abs=1e-12)
        want = textbook_pearson(average_ranks(a), average_ranks(b))
        assert spearman(a, b) == pytest.approx(want, abs=1e-12)


def test_known_values():
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 25, 100])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    assert pearson(np.array([0.0, 0, 1, 1]), np.array([0.1, 0.3, 0.5, 0.9])) == pytest.approx(
        textbook_pearson(np.array([0.0, 0, 1, 1]), np.array([0.1, 0.3, 0.5, 0.9]))
    )


def test_undefined_cases_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns on constant input; we must not reach it
        assert np.isnan(spearman(np.array([1.0, 2]), np.array([2.0, 1])))  # fewer than 3 points
        assert np.isnan(spearman(np.array([1.0, 1, 1, 1]), np.array([1.0, 2, 3, 4])))  # constant side
        assert np.isnan(pearson(np.array([1.0, 2, 3]), np.array([5.0, 5, 5])))
        assert np.isnan(pearson(np.array([]), np.array([])))
        # spearman skips missing points (unseen labels have no rate); 3 remain here
        a, b = np.array([1.0, np.nan, 2, 3, 4]), np.array([1.0, 5, 2, np.nan, 3])
        assert spearman(a, b) == pytest.approx(1.0)
        assert np.isnan(spearman(np.array([1.0, np.nan, 2, 3]), np.array([1.0, 5, np.nan, 3])))
        assert np.isnan(pearson(a, b))  # per-pair inputs never miss a value: a missing one is not skipped


def test_analysis_correlations_on_a_hand_checked_table():
    """Three labels; 'a' is on for every sample without it, 'c' never: rate falls as frequency falls."""
    rows = [("b", "a;b"), ("c", "a;c"), ("b;c", "a;b;c"), ("a", "a"), ("a;b", "a;b;c")]
    frame = pd.DataFrame(
        {"index": range(5), "true_labels": [t for t, _ in rows], "labels_shown_names": [s for _, s in rows]}
    )
    result = analyse_labels({"X": frame}, ["a", "b", "c"])
    rates = result.rates.loc["X"]
    assert rates["a"] == 1.0 and rates["b"] == pytest.approx(0.0) and rates["c"] == pytest.approx(1 / 3)
    row = result.correlations.loc["X"]
    # frequency a 0.4, b 0.6, c 0.4 -> ranks (1.5, 3, 1.5); rates (1, 0, 1/3) -> ranks (3, 1, 2)
    assert row.spearman_frequency == pytest.approx(-np.sqrt(3) / 2)
    assert row.pairs == 8 and row.labels == 3
