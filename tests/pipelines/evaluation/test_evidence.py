"""The rule that leaves a default only on evidence: cross-validated choice,
the paired test against the default, and which validation queries judge."""

from __future__ import annotations

import pytest

from product_search.pipelines.evaluation import evidence as tuning

EVIDENCE = tuning.Evidence(min_queries=5, folds=3, samples=500)


def test_on_tiny_noisy_validation_the_default_stays_though_another_has_a_better_mean():
    # Six queries: "b" gains 0.3 on four and loses 0.2 on two (mean +0.133),
    # what the best of a grid looks like on noise. The old rule took "b".
    default = {f"q{i}": 0.5 for i in range(6)}
    values = {
        "a": default,
        "b": {f"q{i}": 0.8 if i < 4 else 0.3 for i in range(6)},
        "c": {f"q{i}": 0.4 for i in range(6)},
    }

    decided = tuning.choose(values, "a", ["a", "b", "c"], EVIDENCE)

    assert (decided["choice"], decided["moved"]) == ("a", False)
    cv = decided["cross_validation"]
    assert (cv["queries"], cv["folds"], cv["default"]) == (6, 3, 0.5)
    assert not cv["significant"]
    assert cv["wilcoxon_p_value"] > 0.05
    assert tuning.explain(cv, moved=False).startswith(
        "the default stays: tuning gained"
    )


def test_a_clear_significant_winner_is_chosen():
    # "b" is 0.2 better on 50 of 60 queries and equal on the rest; "c" is
    # worse everywhere. Every fold chooses "b", so out of fold it gains 1/6.
    queries = [f"q{i}" for i in range(60)]
    values = {
        "a": dict.fromkeys(queries, 0.5),
        "b": {q: 0.7 if i < 50 else 0.5 for i, q in enumerate(queries)},
        "c": dict.fromkeys(queries, 0.1),
    }

    decided = tuning.choose(values, "a", ["a", "b", "c"], EVIDENCE)

    assert (decided["choice"], decided["moved"]) == ("b", True)
    cv = decided["cross_validation"]
    assert cv["gain"] == pytest.approx(50 * 0.2 / 60)
    assert cv["tuned"] == pytest.approx(0.5 + 50 * 0.2 / 60)
    assert cv["significant"] and cv["wilcoxon_p_value"] < 1e-6
    assert cv["ci95_low"] > 0


def test_a_significant_gain_below_min_gain_keeps_the_default():
    queries = [f"q{i}" for i in range(60)]
    values = {
        "a": dict.fromkeys(queries, 0.5),
        "b": {q: 0.51 if i < 50 else 0.5 for i, q in enumerate(queries)},
    }
    evidence = tuning.Evidence(min_queries=5, folds=3, samples=500, min_gain=0.01)

    decided = tuning.choose(values, "a", ["a", "b"], evidence)

    assert decided["cross_validation"]["significant"]
    assert (decided["choice"], decided["moved"]) == ("a", False)


def test_a_candidate_not_allowed_is_never_chosen():
    queries = [f"q{i}" for i in range(60)]
    values = {"a": dict.fromkeys(queries, 0.5), "b": dict.fromkeys(queries, 0.9)}

    decided = tuning.choose(values, "a", ["a"], EVIDENCE)

    assert (decided["choice"], decided["moved"]) == ("a", False)
    assert decided["cross_validation"]["gain"] == 0


@pytest.mark.parametrize(
    ("counts", "pool", "sources", "why"),
    [
        ({"log": 40, "generated": 200}, False, ["log"], "40 log validation queries"),
        (
            {"log": 6, "generated": 200},
            False,
            [],
            "only 6 log validation queries (fewer than min_queries 30); the 6 log, "
            "200 generated validation queries alone do not move it (pool_sources: "
            "false)",
        ),
        (
            {"generated": 200},
            False,
            [],
            "only 0 log validation queries (fewer than min_queries 30); the 200 "
            "generated validation queries alone do not move it (pool_sources: false)",
        ),
        (
            {"log": 6, "generated": 200},
            True,
            ["log", "generated"],
            "only 6 log validation queries (fewer than min_queries 30): pooled the "
            "sources (6 log, 200 generated)",
        ),
        (
            {"log": 6, "generated": 10},
            True,
            [],
            "only 6 log validation queries (fewer than min_queries 30), 16 in all",
        ),
    ],
)
def test_the_log_judges_when_it_has_enough_queries_else_the_default_stays(
    counts, pool, sources, why
):
    assert tuning.judging_sources(counts, "log", 30, pool) == (sources, why)


def test_evidence_comes_from_the_tuning_the_gate_and_the_evaluation():
    evidence = tuning.Evidence.from_params(
        {"min_queries": 50, "folds": 10, "min_gain": None, "pool_sources": True},
        {"p_value": 0.01},
        {"bootstrap_samples": 100, "seed": 7},
    )

    assert evidence == tuning.Evidence(
        min_queries=50,
        folds=10,
        alpha=0.01,
        samples=100,
        seed=7,
        min_gain=0.0,
        pool_sources=True,
    )
