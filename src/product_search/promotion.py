"""The promotion gate's statistics: whether a difference between two rankers,
measured per query on the same queries, is real, and whether a candidate may
replace what serves.

Wilcoxon signed-rank is the main test (per-query NDCG is bounded and far from
normal), with the paired t-test beside it, and a percentile bootstrap
confidence interval of the mean gain. The same rule judges the fine-tuned
model against the serving one, the reranker against hybrid search, and a tuned
choice against its default (:mod:`product_search.pipelines.evaluation.evidence`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from product_search.errors import UserError
from product_search.scoring.contracts import ModelEvaluation


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def paired_significance(
    baseline: Sequence[float], fine_tuned: Sequence[float]
) -> dict[str, float | int | None]:
    """Test whether per-query values of two models differ.

    Wilcoxon signed-rank is the main test, since per-query NDCG is bounded and
    far from normal; the paired t-test p-value is given beside it. scipy's
    defaults apply: zero differences are dropped, and the p-value is exact for
    up to 50 distinct non-zero differences, a normal approximation otherwise. When no query changes, both p-values
    are 1 (no evidence of a difference); a p-value scipy cannot compute (e.g. a
    t-test on a single query) is None.
    """
    base, tuned = np.asarray(baseline, float), np.asarray(fine_tuned, float)
    if base.shape != tuned.shape or base.size == 0:
        raise ValueError(
            f"Need the same non-zero number of values per model, got {base.size} "
            f"and {tuned.size}."
        )
    deltas = tuned - base
    counts = {
        "queries": int(deltas.size),
        "improved": int((deltas > 0).sum()),
        "worsened": int((deltas < 0).sum()),
        "unchanged": int((deltas == 0).sum()),
        "mean_delta": float(deltas.mean()),
    }
    if not deltas.any():
        return counts | {"wilcoxon_p_value": 1.0, "paired_t_p_value": 1.0}
    with warnings.catch_warnings():
        # A constant difference makes the t statistic infinite; reported as None.
        warnings.simplefilter("ignore", RuntimeWarning)
        wilcoxon = stats.wilcoxon(tuned, base).pvalue
        t_test = stats.ttest_rel(tuned, base).pvalue
    return counts | {
        "wilcoxon_p_value": _finite_or_none(wilcoxon),
        "paired_t_p_value": _finite_or_none(t_test),
    }


def bootstrap_ci(
    deltas: Sequence[float], samples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``deltas`` (scipy's
    ``stats.bootstrap``): the queries are resampled with replacement
    ``samples`` times with a generator seeded by ``seed``. Paired per-query
    differences make this the paired bootstrap of the mean gain."""
    values = np.asarray(deltas, float)
    if values.size == 0 or samples < 1 or not 0 < confidence < 1:
        raise ValueError(
            "A bootstrap needs values, at least one sample and 0 < confidence < 1; "
            f"got {values.size} values, {samples} samples, confidence {confidence}."
        )
    if np.ptp(values) == 0:
        # Every resample has the same mean; scipy would warn about a
        # degenerate distribution and return NaN for some methods.
        return float(values[0]), float(values[0])
    interval = stats.bootstrap(
        (values,),
        np.mean,
        n_resamples=samples,
        confidence_level=confidence,
        method="percentile",
        # Bounds memory on large query sets: about a million indices per batch.
        batch=max(1, 1_000_000 // values.size),
        rng=np.random.default_rng(seed),
    ).confidence_interval
    low, high = interval.low, interval.high
    return float(low), float(high)


def paired_comparison(
    baseline: Mapping[str, float],
    candidate: Mapping[str, float],
    *,
    alpha: float,
    samples: int,
    seed: int,
) -> dict[str, Any]:
    """Paired tests and the bootstrap CI of the mean gain over the same queries
    (``{query_id: value}`` of each model), and whether the change is
    significant: Wilcoxon p below ``alpha`` and a CI that excludes 0."""
    query_ids = list(baseline)
    base = np.array([baseline[qid] for qid in query_ids])
    tuned = np.array([candidate[qid] for qid in query_ids])
    low, high = bootstrap_ci(tuned - base, samples=samples, seed=seed)
    result = paired_significance(base, tuned) | {
        "ci95_low": low,
        "ci95_high": high,
        "bootstrap_samples": samples,
        "seed": seed,
        "alpha": alpha,
    }
    p = result["wilcoxon_p_value"]
    result["significant"] = bool(p is not None and p < alpha and (low > 0 or high < 0))
    return result


def promotion_verdict(
    baseline: Mapping[str, float],
    candidate: Mapping[str, float],
    *,
    metric: str,
    queries: str,
    models: tuple[str, str],
    alpha: float,
    min_gain: float | None,
    samples: int,
    seed: int,
    names: tuple[str, str] = ("The candidate model", "the serving one"),
) -> dict[str, Any]:
    """Whether the ``candidate`` model may replace the ``baseline`` (serving)
    one, from their per-query ``metric`` on ``queries`` (a name for people):
    refused when it is significantly worse, or gains less than ``min_gain``
    (None: no minimum). ``reason`` says why in one sentence, naming the two
    as ``names``."""
    candidate_name, baseline_name = names
    comparison = paired_comparison(
        baseline, candidate, alpha=alpha, samples=samples, seed=seed
    )
    serving_value = float(np.mean(list(baseline.values())))
    delta = comparison["mean_delta"]
    candidate_value = serving_value + delta
    significant = comparison["significant"]
    direction = "better" if delta > 0 else "worse" if delta < 0 else "unchanged"
    p = comparison["wilcoxon_p_value"]
    figures = (
        f"{metric} {serving_value:.4f} -> {candidate_value:.4f} ({delta:+.4f}) on "
        f"{len(baseline):,} {queries}, Wilcoxon p "
        + ("n/a" if p is None else "< 0.001" if p < 0.001 else f"= {p:.3f}")
    )
    if significant and delta < 0:
        promote = False
        reason = (
            f"{candidate_name} is significantly worse than {baseline_name} ({figures})."
        )
    elif min_gain is not None and delta < min_gain:
        promote = False
        reason = (
            f"{candidate_name} gains less than the required {min_gain:+.4f} "
            f"({figures})."
        )
    elif significant:
        promote = True
        reason = f"{candidate_name} is significantly better than {baseline_name} ({figures})."
    else:
        promote = True
        reason = (
            f"{candidate_name} is not significantly different from {baseline_name} "
            f"({figures}), so it is not worse."
        )
    return {
        "metric": metric,
        "queries": queries,
        "serving_model": models[0],
        "candidate_model": models[1],
        "serving_value": serving_value,
        "candidate_value": candidate_value,
        "delta": delta,
        "direction": direction,
        "significant": significant,
        "min_gain": min_gain,
        "promote": promote,
        "reason": reason,
        "comparison": comparison,
    }


def statistics(
    params: Mapping[str, Any], promotion: Mapping[str, Any]
) -> dict[str, Any]:
    """How every paired comparison is tested: the gate's p-value
    (``promotion.p_value``), the evaluation's bootstrap (``bootstrap_samples``,
    ``seed``)."""
    return {
        "alpha": float(promotion["p_value"]),
        "samples": int(params["bootstrap_samples"]),
        "seed": int(params["seed"]),
    }


def judge_models(
    baseline_evaluation: ModelEvaluation,
    candidate_evaluation: ModelEvaluation,
    params: Mapping[str, Any],
    promotion: Mapping[str, Any],
) -> dict[str, Any]:
    """May the candidate replace the baseline (the serving model)? Two models'
    evaluations (:func:`product_search.scoring.evaluate_model`) judged on
    ``promotion.metric`` over the real judgments when there are some, else over
    the held-out test queries (see :func:`promotion_verdict`)."""
    metric = promotion["metric"]
    base_real, candidate_real = (
        baseline_evaluation.real_queries, candidate_evaluation.real_queries
    )  # fmt: skip
    real = base_real is not None and candidate_real is not None
    if real:
        per_query, candidate = base_real.per_query, candidate_real.per_query
    else:
        per_query = {params["primary_metric"]: baseline_evaluation.per_query_ndcg}
        candidate = {params["primary_metric"]: candidate_evaluation.per_query_ndcg}
    if metric not in per_query:
        raise UserError(
            f"promotion.metric '{metric}' is not measured per query on the "
            f"{'real' if real else 'test'} queries; use one of {list(per_query)} "
            "(evaluation.real_query_metrics, or evaluation.primary_metric without "
            "judgments)."
        )
    return promotion_verdict(
        per_query[metric],
        candidate[metric],
        metric=metric,
        queries="real queries" if real else "held-out test queries",
        models=(baseline_evaluation.model_id, candidate_evaluation.model_id),
        min_gain=promotion.get("min_gain"),
        **statistics(params, promotion),
    )
