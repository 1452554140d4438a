"""The served order of a reranker: its score blended with the retrieval
score."""

from __future__ import annotations

from product_search.search.rerank import blended_order


def test_weight_one_is_the_rerankers_order_and_zero_the_retrievals():
    retrieval, rerank = [3.0, 2.0, 1.0], [0.1, 0.9, 0.5]

    assert blended_order(retrieval, rerank, 1.0) == [1, 2, 0]
    assert blended_order(retrieval, rerank, 0.0) == [0, 1, 2]
    # 0.5 * ([0, 1, 0.5] + [1, 0.5, 0]) = [0.5, 0.75, 0.25]
    assert blended_order(retrieval, rerank, 0.5) == [1, 0, 2]


def test_ties_and_flat_scores_keep_the_retrieval_order():
    assert blended_order([1.0, 0.0], [0.0, 1.0], 0.5) == [0, 1]
    assert blended_order([5.0, 5.0, 5.0], [0.2, 0.2, 0.2], 0.7) == [0, 1, 2]
    assert blended_order([], [], 0.5) == []
