"""mix_query_sources and split_queries on tiny query pools."""

from __future__ import annotations

import pandas as pd
import pytest

from product_search.pipelines.data_generation.split import (
    PAIR_COLUMNS,
    mix_query_sources,
    split_queries,
)
from product_search.text import match_key


def _queries(n_products: int, per_product: int) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"p{p}-q{i}", f"query {p} {i}", f"p{p}", "generated")
         for p in range(n_products) for i in range(per_product)],
        columns=["query_id", "query", "product_id", "source"],
    )  # fmt: skip


def test_split_by_query_is_80_20_and_seeded(params):
    queries = _queries(25, 4)
    train, validation, test = split_queries(queries, params)
    again, _, _ = split_queries(queries, params)
    # 20 test queries; 10% of the other 80 validate.
    assert (len(train), len(validation), len(test)) == (72, 8, 20)
    assert set(train["query_id"]).isdisjoint(test["query_id"])
    assert set(validation["query_id"]).isdisjoint(
        set(train["query_id"]) | set(test["query_id"])
    )
    pd.testing.assert_frame_equal(train, again)
    params["split"]["seed"] = 7
    other, _, _ = split_queries(queries, params)
    assert set(other["query_id"]) != set(train["query_id"])


def test_without_validation_shares_the_split_is_80_20(params):
    params["split"]["validation"] = {}
    train, validation, test = split_queries(_queries(25, 4), params)
    assert (len(train), len(validation), len(test)) == (80, 0, 20)
    assert list(validation.columns) == PAIR_COLUMNS


def test_split_by_product_keeps_test_products_out_of_training(params):
    params["split"]["split_by"] = "product"
    train, validation, test = split_queries(_queries(25, 4), params)
    assert (len(train), len(validation), len(test)) == (72, 8, 20)
    assert set(train["product_id"]).isdisjoint(test["product_id"])
    assert set(validation["product_id"]).isdisjoint(
        set(train["product_id"]) | set(test["product_id"])
    )
    assert (test["product_id"].nunique(), validation["product_id"].nunique()) == (5, 2)


def test_validation_takes_its_share_of_logged_queries(params):
    params["split"]["validation"] = {"generated": 0.1, "log": 0.25}
    logged = pd.DataFrame(
        [(f"log-{q}", f"logged {q}", f"p{p}", "log")
         for q in range(8) for p in (q, q + 1)],
        columns=["query_id", "query", "product_id", "source"],
    )  # fmt: skip
    pool = pd.concat([_queries(25, 4), logged], ignore_index=True)
    train, validation, test = split_queries(pool, params)
    assert set(test["source"]) == {"generated"}
    by_source = validation.groupby("source")["query_id"].nunique().to_dict()
    assert by_source == {"generated": 8, "log": 2}
    # A validated logged query keeps all its products, and none of its rows train.
    assert (validation["source"] == "log").sum() == 4
    assert set(validation["query_id"]).isdisjoint(train["query_id"])
    assert train["source"].value_counts().to_dict() == {"generated": 72, "log": 12}


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"test_size": 1.5}, "between 0 and 1"),
        ({"split_by": "brand"}, "'query' or"),
        ({"test_size": 0.01}, "both sides non-empty"),
        ({"validation": {"generated": 1.0}}, "split.validation.generated must be"),
        ({"validation": {"clicks": 0.1}}, "Unknown query source"),
    ],  # fmt: skip
)
def test_bad_split_parameters_are_refused(params, split, message):
    params["split"].update(split)
    with pytest.raises(ValueError, match=message):
        split_queries(_queries(5, 2), params)


def _logged(*rows: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"log-{q}", q, pid) for q, pid in rows],
        columns=["query_id", "query", "product_id"],
    )


def test_leakage_guard_removes_every_judged_query_and_counts_it(params):
    generated = _queries(2, 2).drop(columns="source")
    generated.loc[0, "query"] = "Query 0, 0!"  # a judged query, written otherwise
    logged = _logged(("paint roller", "p0"), ("Caulk Gun", "p1"), ("caulk gun", "p0"))
    negatives = _logged(("caulk gun", "p1"), ("paint roller", "p1"))
    judged = pd.DataFrame(
        {"query_id": ["j1", "j2"], "query": ["query 0 0", "CAULK gun"]}
    )
    pool, kept_negatives, report = mix_query_sources(
        generated, logged, negatives, judged, params
    )
    keys = set(pool["query"].map(match_key))
    assert keys.isdisjoint({"query 0 0", "caulk gun"})
    assert set(kept_negatives["query"]) == {"paint roller"}
    assert report["removed_as_judged"] == {"generated": 1, "log": 2, "negatives": 1}
    assert report["judged_queries"] == 2
    assert pool.groupby("source").size().to_dict() == {"generated": 3, "log": 1}


def test_sources_are_capped_by_distinct_queries_with_the_seed(params):
    logged = _logged(("saw", "p0"), ("saw", "p1"), ("drill", "p0"), ("nails", "p1"))
    params["query_sources"] = {"generated": {"max_queries": 0},
                               "log": {"max_queries": 2}}  # fmt: skip
    no_judgments = pd.DataFrame({"query_id": [], "query": []})
    pool, _, report = mix_query_sources(
        _queries(3, 2).drop(columns="source"), logged, logged[:0], no_judgments, params
    )
    again, _, _ = mix_query_sources(
        _queries(3, 2).drop(columns="source"), logged, logged[:0], no_judgments, params
    )
    assert set(pool["source"]) == {"log"}
    assert pool["query"].nunique() == 2  # both rows of "saw" stay together
    pd.testing.assert_frame_equal(pool, again)
    assert report["sources"]["log"] == {
        "queries": 2,
        "pairs": len(pool),
        "capped_from": 3,
    }
    assert report["sources"]["generated"]["queries"] == 0


def test_unknown_source_is_refused(params):
    params["query_sources"]["clicks"] = {"max_queries": 1}
    with pytest.raises(ValueError, match="Unknown query source"):
        mix_query_sources(
            _queries(2, 2), _logged(), _logged(), pd.DataFrame({"query": []}), params
        )


def test_logged_queries_all_train_and_keep_their_source(params):
    logged = _logged(("saw", "p0"), ("drill", "p7")).assign(source="log")
    pool = pd.concat([_queries(25, 4), logged], ignore_index=True)
    train, _, test = split_queries(pool, params)
    assert (len(train), len(test)) == (74, 20)
    assert set(test["source"]) == {"generated"}
    # 5% of two logged queries rounds to none held out for validation.
    assert train["source"].value_counts().to_dict() == {"generated": 72, "log": 2}


def test_product_split_leaves_logged_pairs_of_test_products_out(params):
    params["split"]["split_by"] = "product"
    logged = pd.DataFrame(
        [(f"log-{p}", f"logged {p}", f"p{p}", "log") for p in range(25)],
        columns=["query_id", "query", "product_id", "source"],
    )
    train, validation, test = split_queries(
        pd.concat([_queries(25, 4), logged], ignore_index=True), params
    )
    assert set(train["product_id"]).isdisjoint(test["product_id"])
    # 20 logged pairs of training products: one (5%) validates.
    assert (train["source"] == "log").sum() == 19
    assert (validation["source"] == "log").sum() == 1
    assert set(validation["product_id"]).isdisjoint(test["product_id"])


def test_split_without_generated_queries_is_a_clear_error(params):
    logged = _logged(("saw", "p0")).assign(source="log")
    with pytest.raises(ValueError, match="max_queries > 0"):
        split_queries(logged, params)
