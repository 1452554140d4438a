"""Negative mining: the base model's hard negatives for the embedding model's
pairs, and the reranker's examples from both lanes of the search."""

from __future__ import annotations

import numpy as np
import pandas as pd
from datasets import Dataset

from product_search.pipelines.training.mining import (
    lane_candidates,
    reranker_examples,
    with_hard_negatives,
)
from product_search.search.analyzer import analyze
from product_search.search.bm25 import Bm25Params, build_index
from tests.pipelines.training.conftest import BM25

# Four products whose lanes disagree for "oak box": the lexical lane ranks
# them 0 (both terms), then 1 and 2 (one term each, tied, by row), never 3;
# the dense lane ranks them 3, 2, 1, 0 (cosines 1, 0.8, 0.6, 0 to [1, 0]).
TEXTS = ["oak box", "oak table", "steel box", "glass jar"]
PRODUCT_VECTORS = np.array([[0.0, 1.0], [0.6, 0.8], [0.8, 0.6], [1.0, 0.0]])
LEXICAL = build_index([analyze(t) for t in TEXTS], Bm25Params())


def test_lane_candidates_interleave_the_lanes_best_first():
    [found] = lane_candidates(
        ["oak box"], np.array([[1.0, 0.0]]), PRODUCT_VECTORS, LEXICAL,
        skip_top=0, depth=2,
    )  # fmt: skip
    # dense [3, 2] and lexical [0, 1], one of each in turn
    assert found == [3, 0, 2, 1]


def test_lane_candidates_skip_each_lanes_top_and_never_repeat():
    [found] = lane_candidates(
        ["oak box"], np.array([[1.0, 0.0]]), PRODUCT_VECTORS, LEXICAL,
        skip_top=1, depth=3,
    )  # fmt: skip
    # dense [3, 2, 1] and lexical [0, 1, 2] less their first: [2, 1] and [1, 2]
    assert found == [2, 1]


def test_a_query_without_a_known_term_has_dense_candidates_alone():
    found = lane_candidates(
        ["oak box", "velvet"], np.array([[1.0, 0.0], [0.0, 1.0]]),
        PRODUCT_VECTORS, LEXICAL, skip_top=0, depth=2,
    )  # fmt: skip
    assert found == [[3, 0, 2, 1], [0, 1]]


def test_hard_negative_dataset_has_a_negative_column(pairs, products, base_model):
    dataset = Dataset.from_dict({"anchor": pairs["query"].tolist(),
                                 "positive": pairs["product_id"].map(
                                     products.set_index("product_id")["text"]).tolist()})  # fmt: skip
    mined = with_hard_negatives(
        dataset, base_model, products["text"].tolist(),
        {"num_negatives": 1, "range_min": 0, "range_max": 4, "margin": 0.0},
    )  # fmt: skip
    assert mined.column_names == ["anchor", "positive", "negative_1"]
    assert all(
        n != p for n, p in zip(mined["negative_1"], mined["positive"], strict=True)
    )


def test_examples_hold_each_positive_and_negatives_that_are_never_it(
    pairs, products, base_model, reranker_params
):
    # A second positive for one query, and a logged negative for another.
    pairs = pd.concat(
        [pairs, pd.DataFrame([("q0-0", "oak wood box", "p7")], columns=pairs.columns)]
    )
    logged = pd.DataFrame({"query_id": ["q1-0"], "query": ["x"], "product_id": ["p5"]})
    reranker_params["negatives"].update(hard=2, random=1)

    examples, counts = reranker_examples(
        pairs, logged, products, model=base_model, params=reranker_params, bm25=BM25
    )

    title = dict(zip(products["product_id"], products["title"], strict=True))
    for query, group in pairs.groupby("query"):
        rows = examples[examples["query"] == query]
        positives = {title[pid] for pid in group["product_id"]}
        assert set(rows.loc[rows["label"] == 1, "text"]) == positives
        assert positives.isdisjoint(rows.loc[rows["label"] == 0, "text"])
    # 17 positives; 2 hard negatives each (8 products: always enough); one
    # random draw each, kept unless it hits a positive; the logged one.
    assert (counts["positive"], counts["hard"], counts["logged"]) == (17, 34, 1)
    assert 0 < counts["random"] <= 17
    assert len(examples) == sum(counts.values())
    assert examples["label"].sum() == 17
