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

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from product_search import metrics as m
from product_search.search.table import Hit, SearchOptions, SearchTable

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


def _as_run(ranked: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Rankings as scores ranx cannot reorder: best = highest."""
    return {
        qid: {pid: float(len(pids) - i) for i, pid in enumerate(pids)}
        for qid, pids in ranked.items()
    }


def _mean(qrels: Mapping, ranked: Mapping[str, Sequence[str]], metric: str) -> float:
    values = m.graded_metrics(qrels, _as_run(ranked), [metric])[metric]
    return float(np.mean(list(values.values())))


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


def choose(
    query_lanes: Mapping[str, Mapping[str, Lanes]],
    qrels: Mapping[str, Mapping[str, Mapping[str, int]]],
    options: Sequence[SearchOptions],
    *,
    metric: str,
    objective: str,
    max_lane_gap: float,
) -> dict[str, Any]:
    """The fusion among ``options`` with the best ``metric`` on the
    ``objective`` query set, among those within ``max_lane_gap`` of the better
    lane on every set; when none is, the one that falls least below it.

    ``query_lanes`` and ``qrels`` map a set's name (e.g. ``log``) to its
    queries. Returns the choice, each set's lane and chosen values, and every
    candidate's values."""
    k = m.parse_metric(metric)[1]
    lane_values = {
        name: {
            lane: _mean(
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
    scored = []
    for option in options:
        values = {
            name: _mean(
                qrels[name],
                {qid: fuse(found, option, k) for qid, found in sets.items()},
                metric,
            )
            for name, sets in query_lanes.items()
        }
        margin = min(values[name] - max(lane_values[name].values()) for name in values)
        scored.append((option, values, margin))
    feasible = [s for s in scored if s[2] >= -max_lane_gap]
    if feasible:
        best = max(feasible, key=lambda s: s[1][objective])
    else:
        best = max(scored, key=lambda s: s[2])
        logger.warning(
            "No fusion keeps hybrid search within %.3f of its better lane on every "
            "validation set; chose the one that falls least below it (%.4f).",
            max_lane_gap, best[2],
        )  # fmt: skip
    option, values, margin = best
    return {
        "options": option.model_dump(),
        "metric": metric,
        "objective": objective,
        "feasible": bool(feasible),
        "lane_margin": margin,
        "validation": {
            name: {
                "queries": len(query_lanes[name]),
                **lane_values[name],
                "hybrid": values[name],
            }
            for name in query_lanes
        },
        "candidates": [
            {
                "options": o.model_dump(
                    include={"fusion", "rrf_k", "dense_weight", "lexical_weight"}
                ),
                **v,
            }  # fmt: skip
            for o, v, _ in scored
        ],
    }
