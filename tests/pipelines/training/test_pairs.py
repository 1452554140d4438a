"""The training pairs: joined to their products' text, checked, counted,
capped, and made into the embedding model's datasets."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from product_search.pipelines.training.pairs import training_datasets, training_pairs


def test_unknown_products_and_duplicates_are_dropped_and_counted(pairs, products,
                                                                 caplog):  # fmt: skip
    extra = pd.DataFrame(
        [
            ("x1", "mystery box", "gone"),
            ("x2", "oak wood box", "p0"),
            ("x3", " ", "p1"),
        ],
        columns=["query_id", "query", "product_id"],
    )
    with caplog.at_level(logging.WARNING):
        used, report = training_pairs(pd.concat([pairs, extra]), products)
    assert report == {"input_pairs": 19, "unknown_product": 1, "empty_query": 1,
                      "duplicate_pair": 1, "used_pairs": 16}  # fmt: skip
    assert len(used) == 16
    assert "1 training pairs whose product id is not in the catalog" in caplog.text


def test_only_unknown_products_is_a_clear_error(products):
    orphans = pd.DataFrame({"query_id": ["a"], "query": ["q"], "product_id": ["zz"]})
    with pytest.raises(ValueError, match="No usable training pair"):
        training_pairs(orphans, products)


def test_logged_negatives_make_triplets_dealt_out_in_turn(pairs, products):
    texts = products.set_index("product_id")["text"]
    joined, _ = training_pairs(pairs, products)
    # q0-0 has two positives and two negatives; q1-0 none
    doubled = pd.concat([joined, joined.iloc[[0]].assign(product_id="p2",
                                                         text=texts["p2"])], ignore_index=True)  # fmt: skip
    negatives = pd.DataFrame(
        {"query_id": ["q0-0", "q0-0", "q1-0", "q6-1"], "query": "x",
         "product_id": ["p4", "p5", "gone", "p6"]}
    )  # fmt: skip
    datasets = training_datasets(doubled, negatives, texts)
    triplets = datasets["triplets"]
    assert triplets["anchor"] == ["oak wood box", "storage in bamboo", "oak wood box"]
    assert triplets["negative"] == [texts["p4"], texts["p6"], texts["p5"]]
    assert len(datasets["pairs"]) == 17 - 3  # q1-0's only negative is unknown
    assert datasets["pairs"].column_names == ["anchor", "positive"]


def test_pairs_are_counted_by_source(pairs, products):
    sourced = pairs.assign(source=["generated"] * 10 + ["log"] * 6)
    _, report = training_pairs(sourced, products)
    assert report["by_source"] == {"generated": 10, "log": 6}


def test_a_cap_keeps_the_logged_pairs_first(pairs, products):
    sourced = pairs.assign(source=["generated"] * 10 + ["log"] * 6)
    used, report = training_pairs(sourced, products, max_pairs=8)
    assert report["by_source"] == {"generated": 2, "log": 6}
    assert used["query_id"].tolist() == (
        sourced["query_id"].iloc[10:].tolist() + sourced["query_id"].iloc[:2].tolist()
    )


def test_a_cap_without_sources_takes_the_first_pairs(pairs, products):
    used, _ = training_pairs(pairs, products, max_pairs=3)
    assert used["query_id"].tolist() == pairs["query_id"].iloc[:3].tolist()
