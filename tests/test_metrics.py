"""Metric code on hand-made data with exactly known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from product_search import metrics as m

CUTOFFS = {"ndcg": [5, 10], "mrr": [10], "accuracy": [1, 5, 10], "recall": [5, 10]}

# Twelve products, each embedded as its own unit vector: product i is e_i.
PRODUCTS = [f"p{i:02d}" for i in range(1, 13)]
CORPUS = {pid: f"text of {pid}" for pid in PRODUCTS}


def _vector(weights: dict[str, float]) -> torch.Tensor:
    vector = torch.zeros(len(PRODUCTS))
    for pid, weight in weights.items():
        vector[PRODUCTS.index(pid)] = weight
    return vector


def _leaning_on(others: list[str], own: str, own_weight: float = 1.0) -> torch.Tensor:
    """A query closer to ``others`` (weight 2) than to its own product."""
    return _vector(dict.fromkeys(others, 2.0) | {own: own_weight})


# Five queries, each with one relevant product placed at a chosen rank. Cosine
# with a unit vector e_i is the query's weight on i over its norm, so products
# rank by weight.
QUERIES = {
    "q1": ("first", "p01", _vector({"p01": 1.0})),  # rank 1
    "q2": ("second", "p02", _vector({"p03": 2.0, "p02": 1.0})),  # rank 2
    "q3": ("fourth", "p03", _leaning_on(["p04", "p05", "p06"], "p03")),  # rank 4
    "q4": ("seventh", "p04", _leaning_on(PRODUCTS[4:10], "p04")),  # rank 7
    # Weight 0 on its own product and 1 on the 11 others: ranks 12th, out of top 10.
    "q5": ("last", "p05", _vector({pid: 1.0 for pid in PRODUCTS if pid != "p05"})),
}


class FakeEncoder:
    """Looks texts up instead of running a network."""

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table
        self.calls: list[int] = []

    def _encode(self, inputs: list[str], **kwargs) -> torch.Tensor:
        self.calls.append(len(inputs))
        return torch.stack([self.table[text] for text in inputs])

    encode_query = encode_document = _encode


@pytest.fixture
def encoder() -> FakeEncoder:
    table = {text: _vector({pid: 1.0}) for pid, text in CORPUS.items()}
    table |= {text: vector for text, _, vector in QUERIES.values()}
    return FakeEncoder(table)


def _evaluate(encoder: FakeEncoder) -> m.BinaryEvaluation:
    embeddings = m.encode_corpus(encoder, list(CORPUS.values()), batch_size=8)
    return m.binary_ir_metrics(
        encoder,
        queries={qid: text for qid, (text, _, _) in QUERIES.items()},
        corpus=CORPUS,
        corpus_embeddings=embeddings,
        relevant_docs={qid: {pid} for qid, (_, pid, _) in QUERIES.items()},
        cutoffs=CUTOFFS,
        primary_k=10,
    )


def test_binary_metrics_match_hand_computed_values(encoder):
    result = _evaluate(encoder)

    # NDCG@10 per query = 1/log2(rank + 1): rank 1 -> 1, rank 2 -> 1/log2(3) =
    # 0.6309, rank 4 -> 1/log2(5) = 0.4307, rank 7 -> 1/log2(8) = 1/3, rank 12 -> 0.
    expected_ndcg10 = [1.0, 1 / math.log2(3), 1 / math.log2(5), 1 / 3, 0.0]
    assert result.per_query_ndcg == pytest.approx(
        dict(zip(QUERIES, expected_ndcg10, strict=True))
    )
    assert result.metrics == pytest.approx(
        {
            "ndcg@10": sum(expected_ndcg10) / 5,  # 0.4790
            # Only ranks 1, 2 and 4 are within the top 5.
            "ndcg@5": (1 + 1 / math.log2(3) + 1 / math.log2(5)) / 5,  # 0.4123
            # Reciprocal ranks 1, 1/2, 1/4, 1/7 and 0 (rank 12 is past 10).
            "mrr@10": (1 + 1 / 2 + 1 / 4 + 1 / 7) / 5,  # 0.3786
            "accuracy@1": 1 / 5,  # only q1's product is first
            "accuracy@5": 3 / 5,  # ranks 1, 2, 4
            "accuracy@10": 4 / 5,  # ranks 1, 2, 4, 7
            # One relevant product per query, so Recall@k equals Accuracy@k.
            "recall@5": 3 / 5,
            "recall@10": 4 / 5,
        }
    )


def test_per_query_ndcg_averages_to_the_evaluators_ndcg(encoder):
    result = _evaluate(encoder)

    assert np.mean(list(result.per_query_ndcg.values())) == pytest.approx(
        result.metrics["ndcg@10"], abs=1e-12
    )


def test_corpus_is_encoded_once_and_queries_once(encoder):
    _evaluate(encoder)

    # One call for the 12 products (encode_corpus), one for the 5 queries.
    assert encoder.calls == [12, 5]


def test_binary_metrics_reject_a_query_without_relevant_product(encoder):
    with pytest.raises(ValueError, match="1 queries have no relevant product"):
        m.binary_ir_metrics(
            encoder,
            queries={"q1": "first"},
            corpus=CORPUS,
            corpus_embeddings=m.encode_corpus(encoder, list(CORPUS.values()), 8),
            relevant_docs={},
            cutoffs=CUTOFFS,
            primary_k=10,
        )


def test_cutoffs_must_cover_every_metric_family():
    with pytest.raises(ValueError, match=r"missing: \['mrr'\]"):
        m.metric_names({"ndcg": [10], "accuracy": [1], "recall": [10]})


def test_top_k_returns_rows_and_scores_best_first(encoder):
    embeddings = m.encode_corpus(encoder, list(CORPUS.values()), batch_size=8)

    (hits,) = m.top_k(encoder, ["second"], embeddings, k=2)

    # "second" = 2 e3 + e2, norm sqrt(5): cosine 2/sqrt(5) with p03 (row 2) and
    # 1/sqrt(5) with p02 (row 1).
    assert [row for row, _ in hits] == [2, 1]
    assert [score for _, score in hits] == pytest.approx([2 / 5**0.5, 1 / 5**0.5])


def test_graded_metrics_match_hand_computed_values():
    qrels = {
        "q1": {"a": 2, "b": 0, "c": 1},
        "q2": {"d": 3},
        "q3": {"e": 1, "f": 1},
    }
    run = {
        "q1": {"b": 0.9, "c": 0.5, "x": 0.2, "a": 0.1},
        "q2": {"d": 0.8, "y": 0.1},
        "q3": {"e": 0.9, "g": 0.5},
    }

    result = m.graded_metrics(qrels, run, ["ndcg@10", "mrr@10", "recall@10"])

    # q1 ranks b (judged 0), c (1), x (unjudged), a (2): DCG = 1/log2(3) +
    # 2/log2(5); the ideal order a, c gives 2/log2(2) + 1/log2(3).
    q1_ndcg = (1 / math.log2(3) + 2 / math.log2(5)) / (2 + 1 / math.log2(3))
    # q3 finds e first and misses f: DCG 1, ideal 1 + 1/log2(3).
    q3_ndcg = 1 / (1 + 1 / math.log2(3))
    assert result["ndcg@10"] == pytest.approx({"q1": q1_ndcg, "q2": 1.0, "q3": q3_ndcg})
    assert q1_ndcg == pytest.approx(0.5672, abs=1e-4)
    # b is judged 0, not relevant: q1's first relevant product is c, at rank 2.
    assert result["mrr@10"] == pytest.approx({"q1": 0.5, "q2": 1.0, "q3": 1.0})
    # q1 finds both of a and c; q3 one of e and f.
    assert result["recall@10"] == pytest.approx({"q1": 1.0, "q2": 1.0, "q3": 0.5})


def test_graded_metrics_score_a_query_that_retrieved_nothing_as_zero():
    qrels = {"q1": {"a": 2}, "q2": {"b": 1}}
    names = ["ndcg@10", "mrr@10", "recall@10"]

    # A lexical search with no matching word returns no product at all.
    some = m.graded_metrics(qrels, {"q1": {"a": 1.0}, "q2": {}}, names)
    none = m.graded_metrics(qrels, {"q1": {}, "q2": {}}, names)

    assert some == {name: {"q1": 1.0, "q2": 0.0} for name in names}
    assert none == {name: {"q1": 0.0, "q2": 0.0} for name in names}


def test_graded_metrics_refuse_a_query_without_relevant_product():
    with pytest.raises(ValueError, match="1 judged queries have no relevant product"):
        m.graded_metrics({"q1": {"a": 0}}, {"q1": {"a": 1.0}}, ["ndcg@10"])


def test_compare_gives_delta_and_percent_change():
    changes = m.compare(
        {"ndcg@10": 0.5, "mrr@10": 0.0}, {"ndcg@10": 0.6, "mrr@10": 0.2}
    )

    assert changes["ndcg@10"] == pytest.approx(
        {"baseline": 0.5, "fine_tuned": 0.6, "delta": 0.1, "pct_change": 20.0}
    )
    # No percentage of a zero baseline.
    assert changes["mrr@10"]["pct_change"] is None
