"""prepare_search_logs on tiny hand-made logs."""

from __future__ import annotations

import pandas as pd
import pytest

from product_search.pipelines.data_generation.search_logs import prepare_search_logs


def _log(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["search_terms", "sku", "clicks"])


def _catalog(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"product_id": list(ids), "title": list(ids)})


LOG_MAPPING = {"query": "search_terms", "product_id": "sku", "relevance": "clicks"}


def test_search_log_maps_columns_thresholds_and_counts_drops(params):
    params["search_logs"] |= {"columns": LOG_MAPPING, "aggregate": "sum",
                              "positive_min": 2, "negative_max": 0}  # fmt: skip
    log = _log(
        ("Drill Bits", "p1", 1),
        ("drill bits ", "p1", 2),  # the same pair after normalising: 3 clicks
        ("drill bits", "p2", 0),  # shown, not clicked: a hard negative
        ("drill bits", "p3", 1),  # between the thresholds
        ("paint", "gone", 9),  # not in the catalog
        ("", "p1", 5),
        ("paint", "p2", "n/a"),
        ("hammer", "p3", 0),  # a negative without a positive teaches nothing
    )
    positives, negatives, report = prepare_search_logs(
        log, _catalog("p1", "p2", "p3"), params
    )
    assert positives[["query", "product_id"]].values.tolist() == [["drill bits", "p1"]]
    assert negatives[["query", "product_id"]].values.tolist() == [["drill bits", "p2"]]
    assert positives["query_id"][0] == negatives["query_id"][0]
    assert positives["query_id"][0].startswith("log-")
    assert report["dropped"] == {"empty_query": 1, "unreadable_relevance": 1,
                                 "unknown_product": 1}  # fmt: skip
    assert report | {"dropped": None} == {
        "input_rows": 8, "dropped": None, "distinct_pairs": 4, "positive_pairs": 1,
        "positive_queries": 1, "hard_negatives": 1, "between_thresholds": 1,
    }  # fmt: skip


def test_graded_log_keeps_the_highest_judgment_of_a_pair(params):
    log = pd.DataFrame(
        {"query": ["saw", "saw", "saw"], "product_id": ["p1", "p1", "p2"],
         "relevance": [3, 5, 1]}
    )  # fmt: skip
    positives, negatives, _ = prepare_search_logs(log, _catalog("p1", "p2"), params)
    assert positives["product_id"].tolist() == ["p1"]
    assert negatives["product_id"].tolist() == ["p2"]


def test_absent_search_log_gives_empty_tables(params):
    positives, negatives, report = prepare_search_logs(
        pd.DataFrame(), _catalog("p1"), params
    )
    assert positives.empty and negatives.empty
    assert report == {"input_rows": 0}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": {"query": "q"}}, "'q' \\(for query\\)"),
        ({"negative_max": 4}, "must be below positive_min"),
        ({"aggregate": "mean"}, "'max' \\(judgments\\) or 'sum'"),
    ],  # fmt: skip
)
def test_bad_search_log_settings_are_refused(params, options, message):
    params["search_logs"] |= options
    log = pd.DataFrame({"query": ["saw"], "product_id": ["p1"], "relevance": [5]})
    with pytest.raises(ValueError, match=message):
        prepare_search_logs(log, _catalog("p1"), params)
