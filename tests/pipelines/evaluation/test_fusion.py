"""Tuning hybrid search's fusion for a model: the fusion applied to the lanes
equals the SQL's, and the choice follows the objective within the lane gap."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from product_search.pipelines.evaluation import evidence as tuning
from product_search.pipelines.evaluation import fusion
from product_search.search.table import Hit, SearchOptions
from tests import pg
from tests.search.test_table import five_products  # noqa: F401 (a fixture)

OPTIONS = [
    SearchOptions(),
    SearchOptions(rrf_k=60, dense_weight=0.3, lexical_weight=0.7),
    SearchOptions(fusion="weighted", dense_weight=0.4, lexical_weight=0.6),
    SearchOptions(fusion="weighted", dense_weight=0.9, lexical_weight=0.1),
    SearchOptions(dense_depth=2, lexical_depth=2),
]


@pytest.fixture
def table(five_products):  # noqa: F811
    for make in pg.dataset_factory(dimension=3):
        dataset = make()
        dataset.save(five_products)
        yield dataset.load()


@pytest.mark.parametrize("options", OPTIONS)
def test_fusing_the_lanes_ranks_as_the_sql_does(table, options):
    queries = {"q1": "oak boards", "q2": "copper pipe", "q3": "walnut"}
    vectors = np.array([[0, 0, 1], [0.8, 0.6, 0], [1, 0, 0]], dtype=np.float32)

    lanes = fusion.lanes(table, queries, vectors, options, 4)

    for (qid, query), vector in zip(queries.items(), vectors, strict=True):
        expected = table.search(query, vector, 4, options=options)
        assert fusion.fuse(lanes[qid], options, 4) == [h.product_id for h in expected]
    assert lanes["q3"].lexical == []  # "walnut": dense results only


def _hit(pid: str, score: float, lane: str) -> Hit:
    dense = lane == "dense"
    return Hit(pid, score, {}, None, score if dense else None, None,
               None if dense else score)  # fmt: skip


def _lanes(dense: list[tuple[str, float]], lexical: list[tuple[str, float]]):
    return fusion.Lanes(
        [_hit(pid, s, "dense") for pid, s in dense],
        [_hit(pid, s, "lexical") for pid, s in lexical],
    )


# On a logged query BM25 finds the relevant product r first and the dense
# lane third; on a generated query the dense lane finds s first, BM25 second.
LOGGED = _lanes([("a", 0.9), ("b", 0.8), ("r", 0.7)], [("r", 10), ("c", 5)])
GENERATED = _lanes([("s", 0.9), ("d", 0.5)], [("d", 10), ("s", 9)])
# Weighted 0.9 / 0.1: a on the logged query (0.9 vs r 0.1), s on the
# generated one: the dense lane's order.
DENSE_HEAVY = SearchOptions(fusion="weighted", dense_weight=0.9, lexical_weight=0.1)
# Weighted 0.1 / 0.9: r on the logged query, d on the generated one: best on
# the log, but 1 below the dense lane on the generated queries.
LEXICAL_HEAVY = SearchOptions(fusion="weighted", dense_weight=0.1, lexical_weight=0.9)
# RRF (k 60) 0.6 / 0.4: q1 r 0.6/63 + 0.4/61 = 0.01608 > a 0.6/61 = 0.00984;
# q2 s 0.6/61 + 0.4/62 = 0.01629 > d 0.6/62 + 0.4/61 = 0.01623.
BALANCED = SearchOptions(rrf_k=60, dense_weight=0.6, lexical_weight=0.4)
EVIDENCE = tuning.Evidence(min_queries=30, folds=5, samples=500)
POOLING = tuning.Evidence(min_queries=30, folds=5, samples=500, pool_sources=True)


def _sets(logged: int, generated: int):
    lanes = {
        "log": {f"l{i}": LOGGED for i in range(logged)},
        "generated": {f"g{i}": GENERATED for i in range(generated)},
    }
    qrels = {
        "log": {f"l{i}": {"r": 1} for i in range(logged)},
        "generated": {f"g{i}": {"s": 1} for i in range(generated)},
    }
    return lanes, qrels


def test_a_significantly_better_fusion_within_the_lane_gap_replaces_the_default():
    lanes, qrels = _sets(logged=40, generated=40)

    choice = fusion.choose(
        lanes, qrels, [DENSE_HEAVY, LEXICAL_HEAVY, BALANCED],
        metric="ndcg@1", max_lane_gap=0.005, evidence=EVIDENCE,
    )  # fmt: skip

    # LEXICAL_HEAVY is as good on the log, but falls 1 below the dense lane on
    # the 40 generated queries.
    assert choice["options"] == BALANCED.model_dump()
    assert (choice["moved"], choice["objective"], choice["lane_margin"]) == (
        True, "log", 0.0,
    )  # fmt: skip
    cv = choice["cross_validation"]
    assert (cv["queries"], cv["default"], cv["tuned"], cv["gain"]) == (40, 0, 1, 1)
    assert cv["significant"] and cv["wilcoxon_p_value"] < 1e-6
    assert choice["reason"].startswith("40 log validation queries; tuning beat")
    assert choice["validation"] == {
        "log": {"queries": 40, "dense": 0.0, "lexical": 1.0, "hybrid": 1.0},
        "generated": {"queries": 40, "dense": 1.0, "lexical": 0.0, "hybrid": 1.0},
    }
    assert [(c["log"], c["generated"]) for c in choice["candidates"]] == [
        (0.0, 1.0), (1.0, 0.0), (1.0, 1.0),
    ]  # fmt: skip


def test_a_few_logged_queries_are_pooled_and_a_source_below_the_minimum_does_not_bind():
    # With pool_sources: 3 logged queries (below min_queries 30) and 40
    # generated ones are pooled,
    # the lexical-heavy fusion gains 3 logged queries and loses 40 generated
    # ones; the balanced one gains the 3 without a loss, which is not
    # significant on 43 queries.
    lanes, qrels = _sets(logged=3, generated=40)

    choice = fusion.choose(
        lanes, qrels, [DENSE_HEAVY, LEXICAL_HEAVY, BALANCED],
        metric="ndcg@1", max_lane_gap=0.005, evidence=POOLING,
    )  # fmt: skip

    assert choice["options"] == DENSE_HEAVY.model_dump()
    assert (choice["moved"], choice["objective"]) == (False, "log+generated")
    assert choice["cross_validation"]["queries"] == 43
    assert choice["cross_validation"]["gain"] == pytest.approx(3 / 43)
    assert not choice["cross_validation"]["significant"]
    assert choice["reason"].startswith(
        "only 3 log validation queries (fewer than min_queries 30): pooled the "
        "sources (3 log, 40 generated); the default stays"
    )


def test_without_enough_validation_queries_the_default_stays():
    lanes, qrels = _sets(logged=6, generated=10)

    choice = fusion.choose(
        lanes, qrels, [DENSE_HEAVY, BALANCED],
        metric="ndcg@1", max_lane_gap=0.005, evidence=EVIDENCE,
    )  # fmt: skip

    assert choice["options"] == DENSE_HEAVY.model_dump()
    assert (choice["moved"], choice["objective"]) == (False, None)
    assert choice["reason"] == (
        "the default stays: only 6 log validation queries (fewer than "
        "min_queries 30); the 6 log, 10 generated validation queries alone do "
        "not move it (pool_sources: false)"
    )
    # Without pooling, 3 logged and 40 generated queries do not move it either.
    few = fusion.choose(
        *_sets(logged=3, generated=40), [DENSE_HEAVY, BALANCED],
        metric="ndcg@1", max_lane_gap=0.005, evidence=EVIDENCE,
    )  # fmt: skip
    assert (few["options"], few["moved"]) == (DENSE_HEAVY.model_dump(), False)


def test_candidates_are_the_default_then_the_grid():
    default = SearchOptions(dense_depth=50)
    grid = {"fusion": ["rrf", "weighted"], "rrf_k": [5, 60], "dense_weight": [0.3, 0.5]}

    options = fusion.candidates(default, grid)

    assert options[0] == default
    # RRF: 2 k x 2 weights; weighted: 2 weights (k does not apply).
    assert len(options) == 1 + 4 + 2
    assert {(o.fusion, o.rrf_k, o.dense_weight, o.lexical_weight)
            for o in options[1:]} == {
        ("rrf", 5, 0.3, 0.7), ("rrf", 5, 0.5, 0.5), ("rrf", 60, 0.3, 0.7),
        ("rrf", 60, 0.5, 0.5), ("weighted", 5, 0.3, 0.7), ("weighted", 5, 0.5, 0.5),
    }  # fmt: skip
    assert all(o.dense_depth == 50 for o in options)
    with pytest.raises(ValidationError, match="lexical_weight"):
        fusion.candidates(default, grid | {"dense_weight": [1.5]})
