"""Choosing how hybrid search fuses its lanes, for one model, on validation
queries.

The best fusion depends on the model: beside a dense lane that ranks far
below BM25 (the base model on shoppers' queries) fusion must lean on the
lexical lane; beside a dense lane trained on the shop's own queries it should
not. So the fusion is tuned per trained model, on queries held out of its
training, and recorded with the table version it serves.

Each validation query is searched once per lane, through
:meth:`SearchTable.search`; every candidate fusion is then applied to those
lanes here, with the SQL's arithmetic (``search_function.sql``) and its
order (score, then product id), which a test holds equal to the SQL's.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from product_search import metrics as m
from product_search.search.table import Hit, SearchOptions, SearchTable

from .evidence import Evidence, explain, judging_sources
from .evidence import choose as choose_on_evidence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lanes:
    """One query's candidates from each lane, best first."""

    dense: list[Hit]
    lexical: list[Hit]


def lanes(
    table: SearchTable,
    queries: Mapping[str, str],
    vectors: np.ndarray,
    options: SearchOptions,
    k: int,
) -> dict[str, Lanes]:
    """Each query's dense and lexical candidates, as deep as hybrid search
    with ``options`` looks for ``k`` results (``vectors``: the queries' unit
    embeddings)."""
    dense_depth = max(options.dense_depth, k)
    lexical_depth = max(options.lexical_depth, k)
    return {
        query_id: Lanes(
            table.search(text, vector, dense_depth, mode="dense", options=options),
            table.search(text, None, lexical_depth, mode="lexical", options=options),
        )
        for (query_id, text), vector in zip(queries.items(), vectors, strict=True)
    }


def _normalised(scores: list[float]) -> list[float]:
    """Min-max over the lane's candidates; 1 when they all tie."""
    low, high = min(scores, default=0.0), max(scores, default=0.0)
    if high == low:
        return [1.0] * len(scores)
    return [(score - low) / (high - low) for score in scores]


def fuse(candidates: Lanes, options: SearchOptions, k: int) -> list[str]:
    """The ``k`` product ids hybrid search returns for these lanes."""
    scores: dict[str, float] = {}
    for hits, weight, attribute in (
        (candidates.dense, options.dense_weight, "dense_score"),
        (candidates.lexical, options.lexical_weight, "lexical_score"),
    ):
        if options.fusion == "rrf":
            parts = [1.0 / (options.rrf_k + rank) for rank in range(1, len(hits) + 1)]
        else:
            parts = _normalised([getattr(hit, attribute) for hit in hits])
        for hit, part in zip(hits, parts, strict=True):
            scores[hit.product_id] = scores.get(hit.product_id, 0.0) + weight * part
    return sorted(scores, key=lambda pid: (-scores[pid], pid))[:k]


def candidates(default: SearchOptions, grid: Mapping[str, Any]) -> list[SearchOptions]:
    """``default`` and every fusion of the grid: ``fusion`` x ``rrf_k`` (RRF
    only) x ``dense_weight`` (the lexical lane weighs ``1 - dense_weight``)."""
    options = [default]
    for fusion, weight in itertools.product(grid["fusion"], grid["dense_weight"]):
        for rrf_k in grid["rrf_k"] if fusion == "rrf" else [default.rrf_k]:
            options.append(
                default.model_copy(
                    update={
                        "fusion": fusion,
                        "rrf_k": int(rrf_k),
                        "dense_weight": float(weight),
                        "lexical_weight": round(1.0 - float(weight), 6),
                    }
                )
            )
    unique = list(dict.fromkeys(options))
    for option in unique:  # the grid's values pass SearchOptions' own checks
        SearchOptions.model_validate(option.model_dump())
    return unique


def _per_query(
    qrels: Mapping, ranked: Mapping[str, Sequence[str]], metric: str
) -> dict[str, float]:
    values = m.graded_metrics(
        qrels, {qid: m.ranked_run(pids) for qid, pids in ranked.items()}, [metric]
    )[metric]
    return {qid: float(values.get(qid, 0.0)) for qid in ranked}


def choose(
    query_lanes: Mapping[str, Mapping[str, Lanes]],
    qrels: Mapping[str, Mapping[str, Mapping[str, int]]],
    options: Sequence[SearchOptions],
    *,
    metric: str,
    max_lane_gap: float,
    evidence: Evidence,
    preferred: str = "log",
) -> dict[str, Any]:
    """``options[0]`` (the project's default fusion), or the fusion of
    ``options`` with the best ``metric`` when choosing it beats the default by
    more than chance (:func:`.evidence.choose`) on the
    judging queries: the ``preferred`` source's (the search log) when it has
    ``evidence.min_queries``, else (``evidence.pool_sources``) every
    source's pooled, else none: the default stays. A candidate must
    also keep hybrid within ``max_lane_gap`` of its better lane on each
    source with ``evidence.min_queries`` queries.

    ``query_lanes`` and ``qrels`` map a source's name (e.g. ``log``) to its
    queries. Returns the choice and why, each source's lane and chosen values,
    and every candidate's values."""
    k = m.parse_metric(metric)[1]
    lane_values = {
        name: {
            lane: _per_query(
                qrels[name],
                {
                    qid: [hit.product_id for hit in getattr(found, lane)[:k]]
                    for qid, found in sets.items()
                },
                metric,
            )
            for lane in ("dense", "lexical")
        }
        for name, sets in query_lanes.items()
    }
    values = [
        {
            name: _per_query(
                qrels[name],
                {qid: fuse(found, option, k) for qid, found in sets.items()},
                metric,
            )
            for name, sets in query_lanes.items()
        }
        for option in options
    ]
    counts = {name: len(sets) for name, sets in query_lanes.items()}
    judges, judged_by = judging_sources(
        counts, preferred, evidence.min_queries, evidence.pool_sources
    )
    sure = [name for name, n in counts.items() if n >= evidence.min_queries]

    def mean(per_query: Mapping[str, float]) -> float:
        return float(np.mean(list(per_query.values()))) if per_query else 0.0

    def margin(i: int) -> float:
        """Hybrid minus its better lane on the worst source measured surely."""
        return min(
            (
                mean(values[i][name]) - max(map(mean, lane_values[name].values()))
                for name in sure
            ),
            default=0.0,
        )

    allowed = [i for i in range(len(options)) if margin(i) >= -max_lane_gap]
    result: dict[str, Any] = {"metric": metric, "judged_by": judged_by}
    if judges:
        pooled = [
            {f"{name}:{qid}": v for name in judges for qid, v in per[name].items()}
            for per in values
        ]
        decided = choose_on_evidence(dict(enumerate(pooled)), 0, allowed, evidence)
        chosen = decided["choice"]
        result |= {
            "objective": "+".join(judges),
            "moved": decided["moved"],
            "cross_validation": decided["cross_validation"],
            "evidence": decided["evidence"],
            "reason": f"{judged_by}; "
            + explain(decided["cross_validation"], decided["moved"]),
        }
    else:
        chosen = 0
        result |= {
            "objective": None,
            "moved": False,
            "evidence": dataclasses.asdict(evidence),
            "reason": f"the default stays: {judged_by}",
        }
    option = options[chosen]
    return result | {
        "options": option.model_dump(),
        "lane_margin": margin(chosen),
        "validation": {
            name: {
                "queries": counts[name],
                **{lane: mean(v) for lane, v in lane_values[name].items()},
                "hybrid": mean(values[chosen][name]),
            }
            for name in query_lanes
        },
        "candidates": [
            {
                "options": o.model_dump(
                    include={"fusion", "rrf_k", "dense_weight", "lexical_weight"}
                ),
                **{name: mean(v) for name, v in values[i].items()},
            }  # fmt: skip
            for i, o in enumerate(options)
        ],
    }
