"""BM25 weights: a hand computation, and the reference library on the same
analyser."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest

from product_search.search.analyzer import analyze
from product_search.search.bm25 import Bm25Params, build_index, idf, score

# Analysed: [oak, board], [oak, board, oak], [pine, board],
# [steel, pipe, 2, 2in], [copper, pipe]: N = 5, avgdl = 13 / 5 = 2.6.
FIVE_PRODUCTS = [
    "Oak Board",
    "Oak Board Oak",
    "Pine Board",
    "Steel Pipe 2 in.",
    "Copper Pipe",
]
# "oak boards" -> [oak, board]; k1 = 1.2, b = 0.75.
#   idf(oak)   = ln(1 + (5 - 2 + 0.5) / (2 + 0.5)) = ln(2.4)     = 0.875469
#   idf(board) = ln(1 + (5 - 3 + 0.5) / (3 + 0.5)) = ln(12 / 7)  = 0.538997
#   |d| = 2: k1 (1 - b + b |d| / avgdl) = 1.2 (0.25 + 0.75 * 2 / 2.6) = 0.992308
#   |d| = 3:                             1.2 (0.25 + 0.75 * 3 / 2.6) = 1.338462
#   product 1: 0.875469 / 1.992308 + 0.538997 / 1.992308         = 0.709963
#   product 2: 0.875469 * 2 / 3.338462 + 0.538997 / 2.338462     = 0.754966
#   product 3: 0.538997 / 1.992308                               = 0.270539
#   products 4 and 5 hold neither term: 0.
HAND_SCORES = [0.709963, 0.754966, 0.270539, 0.0, 0.0]


@pytest.fixture
def terms() -> list[list[str]]:
    return [analyze(text) for text in FIVE_PRODUCTS]


def dense(scores: dict[int, float], n: int) -> list[float]:
    """Every product's score, 0 for the products that are no candidate."""
    return [scores.get(row, 0.0) for row in range(n)]


def test_scores_equal_the_hand_computation(terms):
    index = build_index(terms, Bm25Params(k1=1.2, b=0.75))

    scores = score(index, analyze("oak boards"))

    assert index.average_length == pytest.approx(2.6)
    assert idf(2, 5) == pytest.approx(0.875469, abs=1e-6)
    # Products 4 and 5 hold neither term: no candidates (OR of the terms).
    assert sorted(scores) == [0, 1, 2]
    assert dense(scores, 5) == pytest.approx(HAND_SCORES, abs=1e-6)


def test_a_repeated_query_term_counts_as_often_as_it_occurs(terms):
    index = build_index(terms, Bm25Params())

    once, twice = score(index, ["oak"]), score(index, ["oak", "oak", "walnut"])

    assert twice == pytest.approx({row: 2 * s for row, s in once.items()})
    assert score(index, ["walnut"]) == {}


@pytest.mark.parametrize(
    "query", ["oak boards", "pipe", "2 in copper pipe", "oak oak pine", "walnut"]
)
@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (0.9, 0.4), (2.0, 1.0)])
def test_scores_equal_bm25s_on_the_same_analyser(terms, query, k1, b):
    reference = bm25s.BM25(method="lucene", k1=k1, b=b)
    reference.index(terms, show_progress=False)

    ours = dense(
        score(build_index(terms, Bm25Params(k1=k1, b=b)), analyze(query)), len(terms)
    )

    np.testing.assert_allclose(
        ours, reference.get_scores(analyze(query)), rtol=1e-6, atol=1e-7
    )


def test_vocabulary_ids_and_document_frequencies(terms):
    index = build_index(terms, Bm25Params())

    assert list(index.term_ids) == sorted(index.term_ids)
    frequency = dict(zip(index.term_ids, index.document_frequency, strict=True))
    assert (frequency["board"], frequency["oak"], frequency["2in"]) == (3, 2, 1)
    # Product 2 holds two terms, oak twice: two weights.
    assert sorted(index.weights[1]) == sorted(
        index.term_ids[t] for t in ("oak", "board")
    )


@pytest.mark.parametrize(("k1", "b"), [(-0.1, 0.75), (1.2, 1.5)])
def test_bad_parameters_are_refused(k1, b):
    with pytest.raises(ValueError):
        Bm25Params(k1=k1, b=b)
