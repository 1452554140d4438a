"""The promotion gate's statistics (product_search.promotion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from product_search import promotion as p


def test_paired_significance_of_a_consistent_gain():
    baseline = np.full(6, 0.5)
    fine_tuned = baseline + np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.3])

    result = p.paired_significance(baseline, fine_tuned)

    # All 6 differences are positive: the exact two-sided Wilcoxon p-value is
    # 2 / 2**6, the two most extreme of the 64 equally likely sign patterns.
    assert result["wilcoxon_p_value"] == pytest.approx(2 / 2**6)
    # Mean 0.2, sample sd sqrt(0.008): t = 0.2 / (sqrt(0.008) / sqrt(6)) = sqrt(30).
    assert result["paired_t_p_value"] == pytest.approx(2 * stats.t.sf(math.sqrt(30), 5))
    assert result["mean_delta"] == pytest.approx(0.2)
    assert (result["improved"], result["worsened"], result["unchanged"]) == (6, 0, 0)


def test_paired_significance_of_identical_models_is_one():
    values = np.array([0.2, 0.5, 1.0])

    result = p.paired_significance(values, values.copy())

    assert result == {
        "queries": 3,
        "improved": 0,
        "worsened": 0,
        "unchanged": 3,
        "mean_delta": 0.0,
        "wilcoxon_p_value": 1.0,
        "paired_t_p_value": 1.0,
    }


def test_paired_significance_reports_an_untestable_t_test_as_none():
    # One query: the t-test has no degrees of freedom; Wilcoxon's exact p is 1.
    result = p.paired_significance([0.2], [0.7])

    assert result["paired_t_p_value"] is None
    assert result["wilcoxon_p_value"] == 1.0


def test_bootstrap_ci_is_seeded_and_contains_the_mean():
    deltas = np.random.default_rng(0).normal(0.05, 0.2, size=300)

    first = p.bootstrap_ci(deltas, samples=500, seed=42)

    assert first == p.bootstrap_ci(deltas, samples=500, seed=42)
    assert first != p.bootstrap_ci(deltas, samples=500, seed=7)
    low, high = first
    assert low < deltas.mean() < high
    # About 1.96 standard errors each side of the mean.
    standard_error = deltas.std(ddof=1) / math.sqrt(deltas.size)
    assert high - low == pytest.approx(2 * 1.96 * standard_error, rel=0.15)


def test_bootstrap_ci_is_scipys_percentile_bootstrap_of_the_mean():
    deltas = np.random.default_rng(0).normal(0.05, 0.2, size=50)

    expected = stats.bootstrap(
        (deltas,), np.mean, n_resamples=300, method="percentile",
        rng=np.random.default_rng(3),
    ).confidence_interval  # fmt: skip

    assert p.bootstrap_ci(deltas, samples=300, seed=3) == (
        expected.low,
        expected.high,
    )


def test_bootstrap_ci_of_a_constant_is_that_constant():
    assert p.bootstrap_ci([0.25] * 10, samples=50, seed=1) == pytest.approx(
        (0.25, 0.25)
    )


def test_bootstrap_ci_needs_values():
    with pytest.raises(ValueError, match="got 0 values"):
        p.bootstrap_ci([], samples=10, seed=1)
