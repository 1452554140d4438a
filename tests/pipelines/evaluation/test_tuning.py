"""The reranker's weight against the hybrid score, tuned on validation
queries (tune_reranker)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from product_search.pipelines.evaluation.tuning import tune_reranker
from product_search.release import FusionChoice
from product_search.search.table import Hit, SearchOptions

TWO_RANK = 1 / math.log2(3)  # NDCG@10 of the one relevant product at rank 2


def _hit(product_id: str, score: float) -> Hit:
    return Hit(product_id, score, {"title": product_id}, None, None, None, None)


class FixedTable:
    """Hybrid hits by query text, as SearchTable.search returns them."""

    HITS = {
        "q one": [_hit("A", 1.0), _hit("B", 0.9), _hit("C", 0.1)],
        "q two": [_hit("D", 1.0), _hit("E", 0.5)],
        "generated": [_hit("A", 1.0)],
    }

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    def search(self, text, vector, k, *, mode, options):
        self.calls.append((text, k, mode))
        return self.HITS[text][:k]


class FixedScorer:
    SCORES = {"A": 0.0, "B": 0.2, "C": 1.0, "D": 0.0, "E": 1.0}
    model_id = "rerankers/fixed@v1"

    def predict(self, pairs, **kwargs):
        return [self.SCORES[text] for _, text in pairs]


VALIDATION = pd.DataFrame(
    {
        "query_id": ["v1", "v2", "g1"],
        "query": ["q one", "q two", "generated"],
        "product_id": ["B", "E", "A"],
        "source": ["log", "log", "generated"],
    }
)
# 20 logged queries like v1 and 20 like v2: enough to judge (min_queries 30).
MANY = pd.DataFrame(
    {
        "query_id": [f"v{i}" for i in range(40)],
        "query": ["q one", "q two"] * 20,
        "product_id": ["B", "E"] * 20,
        "source": "log",
    }
)
PARAMS = {
    "top_n": 3, "text_columns": ["title"], "weight": None,
    "tuning": {"metric": "ndcg@10", "grid": [1, 0.5, 0], "default": 0.0,
               "min_queries": 30, "folds": 5},
}  # fmt: skip
SEARCH_OPTIONS = FusionChoice(
    model="m", options=SearchOptions(), tuned=False, reason=""
)


def _tune(base_model, params=PARAMS, history=None, table=None, queries=VALIDATION):
    return tune_reranker(
        table=table or FixedTable(), model=base_model, reranker=FixedScorer(),
        reranker_history=history or {"trained": True},
        search_options=SEARCH_OPTIONS, validation_queries=queries,
        reranker_params=params, params={"batch_size": 8, "bootstrap_samples": 500},
    )  # fmt: skip


def test_a_weight_that_wins_on_enough_logged_queries_replaces_the_default(
    base_model,
):
    table = FixedTable()

    tuned = _tune(base_model, table=table, queries=MANY)

    # "q one": B is second by retrieval and by the reranker (which puts C
    # first), first blended at 0.5; "q two": E is second by retrieval, first
    # by the reranker, and ties D blended. 0.5 and 1 tie: the smaller weight
    # wins.
    assert tuned.validation == pytest.approx(
        {"0.0": TWO_RANK, "0.5": (1 + TWO_RANK) / 2, "1.0": (1 + TWO_RANK) / 2}
    )
    assert (tuned.weight, tuned.tuned) == (0.5, True)
    assert tuned.cross_validation.significant
    assert tuned.reason.startswith("40 log validation queries; tuning beat")
    assert tuned.model == "rerankers/fixed@v1"
    assert tuned.queries.model_dump() == {"sources": ["log"], "count": 40}
    assert table.calls == [("q one", 3, "hybrid"), ("q two", 3, "hybrid")] * 20


def test_on_a_few_validation_queries_the_weight_stays_at_its_default(base_model):
    table = FixedTable()

    tuned = _tune(base_model, table=table)

    assert (tuned.weight, tuned.tuned) == (0.0, False)
    assert tuned.reason == (
        "the default stays: only 2 log validation queries (fewer than min_queries "
        "30); the 1 generated, 2 log validation queries alone do not move it "
        "(pool_sources: false)"
    )
    assert table.calls == []


def test_a_set_weight_or_no_reranker_is_not_tuned(base_model):
    fixed = _tune(base_model, params=PARAMS | {"weight": 0.3})
    assert (fixed.weight, fixed.tuned) == (0.3, False)
    assert fixed.reason == "reranker.weight is set to 0.3"

    untrained = _tune(base_model, history={"trained": False})
    assert (untrained.model, untrained.weight, untrained.tuned) == (
        None, 0.0, False,
    )  # fmt: skip
