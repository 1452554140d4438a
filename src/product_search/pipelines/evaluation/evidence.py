"""Leaving a default only on evidence: the rule that tunes hybrid search's
fusion and the reranker's weight on validation queries.

The best of many candidates on a handful of validation queries is mostly
noise: a fusion chosen on a few logged queries can serve below the very lane
it fuses, and a reranker weight of 0 tuned on them ships a reranker that
changes nothing and costs time on every request (docs/decisions/
tuning-on-evidence.md has the case that showed it). So:

- the queries that judge are the search log's validation queries when there
  are at least ``min_queries`` of them; else none, and the default stays
  (with ``pool_sources``, every source's pooled when those are enough: off
  by default, because generated queries alone pull the choice towards the
  lanes trained on them);
- a choice replaces the default only when *choosing* beats the default on
  queries it did not choose on: k-fold cross-validation over those queries,
  each fold scored with the candidate the other folds chose, compared with
  the default on the same queries by the promotion gate's paired rule
  (Wilcoxon p below ``alpha`` and a bootstrap 95% CI above 0). Only then is
  the candidate chosen on all the queries taken.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np

from product_search.promotion import paired_comparison

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Evidence:
    """How much validation a tuned choice needs (see the module's rule)."""

    min_queries: int = 30
    folds: int = 5
    alpha: float = 0.05
    samples: int = 2000
    seed: int = 42
    # Also required of the cross-validated gain, besides significance.
    min_gain: float = 0.0
    # Below min_queries logged queries, judge on every source pooled instead
    # of keeping the default. Off by default: generated queries come from the
    # generator the model trained on, and alone they pull the choice towards
    # its dense lane and its reranker, below BM25 on real shoppers' queries
    # (bench/results/small_logs.md).
    pool_sources: bool = False

    @classmethod
    def from_params(
        cls, tuning: Mapping[str, Any], promotion: Mapping[str, Any] | None = None,
        evaluation: Mapping[str, Any] | None = None,
    ) -> Evidence:  # fmt: skip
        """From ``tuning`` (min_queries, folds, min_gain), the promotion
        gate's p_value and the evaluation's bootstrap settings."""
        promotion, evaluation = promotion or {}, evaluation or {}
        return cls(
            min_queries=int(tuning.get("min_queries", cls.min_queries)),
            folds=int(tuning.get("folds", cls.folds)),
            alpha=float(promotion.get("p_value", cls.alpha)),
            samples=int(evaluation.get("bootstrap_samples", cls.samples)),
            seed=int(evaluation.get("seed", cls.seed)),
            min_gain=float(tuning.get("min_gain") or 0.0),
            pool_sources=bool(tuning.get("pool_sources", cls.pool_sources)),
        )


def judging_sources(
    counts: Mapping[str, int], preferred: str, min_queries: int, pool: bool = False
) -> tuple[list[str], str]:
    """The validation sources whose queries judge the candidates, and why:
    ``preferred`` (the search log) alone when it has ``min_queries``; else,
    with ``pool``, every source pooled when together they do; else none."""
    if counts.get(preferred, 0) >= min_queries:
        return [preferred], f"{counts[preferred]} {preferred} validation queries"
    total = sum(counts.values())
    described = ", ".join(f"{n} {source}" for source, n in counts.items()) or "none"
    short = (
        f"only {counts.get(preferred, 0)} {preferred} validation queries (fewer "
        f"than min_queries {min_queries})"
    )
    if pool and total >= min_queries:
        return list(counts), f"{short}: pooled the sources ({described})"
    if pool:
        return [], f"{short}, {total} in all"
    return [], (
        f"{short}; the {described} validation queries alone do not move it "
        "(pool_sources: false)"
    )


def _mean(values: Mapping[Any, float], queries: Sequence[Any]) -> float:
    return float(np.mean([values[q] for q in queries])) if queries else 0.0


def _best(
    values: Mapping[K, Mapping[Any, float]], allowed: Sequence[K], queries: Sequence
) -> K:
    """The allowed candidate with the best mean over ``queries``; ties go to
    the earlier one (the default comes first)."""
    means = [_mean(values[c], queries) for c in allowed]
    return allowed[int(np.argmax(means))]


def choose(
    values: Mapping[K, Mapping[Any, float]],
    default: K,
    allowed: Sequence[K],
    evidence: Evidence,
) -> dict[str, Any]:
    """``default``, or the candidate of ``allowed`` with the best mean when
    choosing it beats ``default`` out of fold (see the module's rule).

    ``values[candidate][query]``: each candidate's metric per judging query.
    Returns ``choice``, ``moved`` and the cross-validation's figures."""
    queries = sorted(values[default], key=str)
    allowed = [default, *(c for c in allowed if c != default)]
    folds = max(2, min(evidence.folds, len(queries)))
    order = np.random.default_rng(evidence.seed).permutation(len(queries))
    out_of_fold: dict[Any, float] = {}
    for fold in np.array_split(order, folds):
        held_out = {queries[i] for i in fold}
        chosen = _best(values, allowed, [q for q in queries if q not in held_out])
        out_of_fold.update({q: values[chosen][q] for q in held_out})
    comparison = paired_comparison(
        {q: values[default][q] for q in queries}, out_of_fold,
        alpha=evidence.alpha, samples=evidence.samples, seed=evidence.seed,
    )  # fmt: skip
    gain = float(comparison["mean_delta"])
    moved = bool(comparison["significant"]) and gain > evidence.min_gain
    choice = _best(values, allowed, queries) if moved else default
    return {
        "choice": choice,
        "moved": moved and choice != default,
        "cross_validation": {
            "queries": len(queries),
            "folds": folds,
            "default": _mean(values[default], queries),
            "tuned": _mean(out_of_fold, queries),
            "gain": gain,
            "wilcoxon_p_value": comparison["wilcoxon_p_value"],
            "ci95_low": comparison["ci95_low"],
            "ci95_high": comparison["ci95_high"],
            "significant": bool(comparison["significant"]),
        },
        "evidence": asdict(evidence),
    }


def explain(cross_validation: Mapping[str, Any], moved: bool) -> str:
    """One sentence on the cross-validated comparison behind a choice."""
    cv = cross_validation
    p = cv["wilcoxon_p_value"]
    figures = (
        f"{cv['gain']:+.4f} out of fold on {cv['queries']} queries ({cv['folds']} "
        f"folds; Wilcoxon p = {'n/a' if p is None else f'{p:.3g}'}, 95% CI "
        f"[{cv['ci95_low']:+.4f}, {cv['ci95_high']:+.4f}])"
    )
    if moved:
        return f"tuning beat the default by {figures}"
    return f"the default stays: tuning gained {figures}, not more than chance"
