"""data_generation nodes on tiny hand-made catalogs."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro_datasets.pandas import CSVDataset

from product_search.datasets import AnswerCache
from product_search.pipelines.data_generation import nodes
from product_search.providers import offline

CONF = Path(__file__).parents[3] / "conf" / "base"


@pytest.fixture
def params() -> dict:
    with open(CONF / "parameters_data_generation.yml") as f:
        loaded = yaml.safe_load(f)["data_generation"]
    loaded["provider"] = "offline"
    return loaded


@pytest.fixture
def raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sku": ["A1", "A2", "A2", "A3", "", "A5"],
            "name": [
                "Caf\u00c3\u00a9 Mug",
                "<b>Chef</b> Knife &amp; Sheath",
                "Dup",
                "   ",
                "No id",
                "Trail   Boots",
            ],  # fmt: skip
            "maker": ["Kitchora", None, "X", "Y", "Z", "TrailPeak"],
            "kind": ["kitchen", "kitchen", "x", "y", "z", "footwear"],
            "cost": ["$12.50", "1,299.00", "1", "2", "3", "n/a"],
            "about": [
                "Stoneware mug,<br>350 ml.",
                float("nan"),
                "",
                "",
                "",
                "Leather.",
            ],
        }
    )


MAPPING = {"product_id": "sku", "title": "name", "brand": "maker",
           "category": "kind", "price": "cost", "description": "about"}  # fmt: skip


def test_prepare_maps_columns_cleans_text_and_counts_every_drop(raw, params):
    params["columns"] = MAPPING
    products, report = nodes.prepare_products(raw, params)

    assert products["product_id"].tolist() == ["A1", "A2", "A5"]
    # mojibake repaired, HTML tags and entities stripped, whitespace collapsed
    assert products["title"].tolist() == [
        "Café Mug",
        "Chef Knife & Sheath",
        "Trail Boots",
    ]
    assert products.loc[0, "description"] == "Stoneware mug, 350 ml."
    assert products["price"].tolist()[:2] == [12.5, 1299.0]
    assert pd.isna(products.loc[2, "price"])
    assert products.loc[1, "brand"] == ""  # NaN becomes empty, never "nan"
    assert products.loc[0, "text"] == (
        "Café Mug. Brand: Kitchora. Category: kitchen. Stoneware mug, 350 ml."
    )
    assert report["input_rows"] == 6
    assert report["kept_products"] == 3
    assert report["dropped"] == {"empty_id": 1, "empty_title": 1, "duplicate_id": 1}
    assert report["missing"] == {
        "brand": 1,
        "category": 0,
        "description": 1,
        "price": 1,
    }
    assert report["repaired"]["text_repaired"] == 1
    assert report["repaired"]["html_stripped"] == 2


def test_prepare_names_every_missing_column(raw, params):
    params["columns"] = {**MAPPING, "title": "product_name", "price": "price_usd"}
    with pytest.raises(ValueError, match=r"'product_name' \(for title\), 'price_usd'"):
        nodes.prepare_products(raw, params)


def test_optional_column_can_be_left_unmapped(raw, params):
    params["columns"] = {**MAPPING, "brand": None}
    products, report = nodes.prepare_products(raw, params)
    assert (products["brand"] == "").all()
    assert report["missing"]["brand"] == 3


def test_zero_rows_is_a_clear_error(params):
    empty = pd.DataFrame(columns=list(MAPPING))
    with pytest.raises(ValueError, match="has no rows"):
        nodes.prepare_products(empty, params)


def test_no_usable_product_is_a_clear_error(params):
    raw = pd.DataFrame({"product_id": ["1", "2"], "title": ["", " "], "brand": "",
                        "category": "", "price": "", "description": ""})  # fmt: skip
    with pytest.raises(ValueError, match="both an id and a title"):
        nodes.prepare_products(raw, params)


def test_text_respects_the_length_budget(raw, params):
    params["columns"] = MAPPING
    params["text_max_chars"] = 20
    products, report = nodes.prepare_products(raw, params)
    assert products["text"].str.len().max() <= 20
    assert products.loc[0, "text"] == "Café Mug. Brand:"  # cut at a word boundary
    assert report["text_truncated"] == 3


def test_non_utf8_catalog_loads_and_is_reported(tmp_path, params):
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        b"product_id,title,brand,category,price,description\n"
        b"1,Caf\xe9 Table,Oakly,home,99,Solid oak\n2,Lamp,Lumo,home,20,Brass lamp\n"
    )
    # the same load arguments as `raw_products` in conf/base/catalog.yml
    with open(CONF / "catalog.yml") as f:
        load_args = yaml.safe_load(f)["raw_products"]["load_args"]
    raw = CSVDataset(filepath=str(path), load_args=load_args).load()
    products, report = nodes.prepare_products(raw, params)
    assert products["title"].tolist() == ["Caf Table", "Lamp"]
    assert report["repaired"]["undecodable_text"] == 1


def test_offline_queries_are_deterministic_and_cycle_types(tiny_products, params):
    cache = AnswerCache("unused")
    first, failures = nodes.generate_queries(tiny_products, cache, params)
    again, _ = nodes.generate_queries(tiny_products, cache, params)

    pd.testing.assert_frame_equal(first, again)
    assert failures.empty
    assert list(first.columns) == ["query_id", "product_id", "query", "query_type",
                                   "provider", "model"]  # fmt: skip
    assert len(first) == 6 * 4
    assert first["query_id"].is_unique
    assert first.groupby("product_id")["query_type"].apply(list).iloc[0] == [
        "specific", "general", "need_based", "attribute_focused"]  # fmt: skip
    assert (first["provider"] == "offline").all()
    p3 = first[first["product_id"] == "p3"].set_index("query_type")["query"]
    assert p3["specific"] == "merrell waterproof hiking boots"
    assert "waterproof" in p3["attribute_focused"]


def test_queries_per_product_and_types_are_parameters(tiny_products, params):
    params.update(queries_per_product=2, query_types=["general"])
    queries, _ = nodes.generate_queries(tiny_products, AnswerCache("unused"), params)
    assert len(queries) == 12
    assert set(queries["query_type"]) == {"general"}


def test_offline_rejects_types_it_cannot_write(tiny_products, params):
    params["query_types"] = ["comparison"]
    with pytest.raises(ValueError, match="does not know the query type"):
        nodes.generate_queries(tiny_products, AnswerCache("unused"), params)


def test_auto_without_a_key_falls_back_to_offline_with_a_warning(
    tiny_products, params, monkeypatch, caplog
):
    # A key in the shell but not among the node's inputs: the inputs decide.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-in-the-shell")
    params["provider"] = "auto"
    with caplog.at_level(logging.WARNING):
        queries, _ = nodes.generate_queries(tiny_products, AnswerCache("x"), params, {})
    assert (queries["provider"] == "offline").all()
    assert "ANTHROPIC_API_KEY is not set" in caplog.text


def test_auto_with_a_key_in_the_credentials_uses_claude_with_that_key(
    tiny_products, params, monkeypatch
):
    from product_search.providers import claude  # noqa: PLC0415

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    seen: dict = {}
    monkeypatch.setattr(claude, "generate_with_claude", _fake_claude([], seen))
    params["provider"] = "auto"
    credentials = {"api_key": "sk-ant-from-credentials"}

    queries, _ = nodes.generate_queries(
        tiny_products, AnswerCache("x"), params, credentials
    )

    assert (queries["provider"] == "claude").all()
    assert seen["credentials"] == credentials


def test_unknown_provider_is_refused(tiny_products, params):
    params["provider"] = "gpt"
    with pytest.raises(ValueError, match="Unknown query provider 'gpt'"):
        nodes.generate_queries(tiny_products, AnswerCache("x"), params)


def _fake_claude(failed_ids, seen):
    def fake(products, cache, **kwargs):
        seen.update(kwargs)
        ok = products[~products["product_id"].isin(failed_ids)]
        queries = pd.DataFrame({"product_id": ok["product_id"], "query": "a query",
                                "query_type": "general", "provider": "claude",
                                "model": kwargs["model"]})  # fmt: skip
        failures = pd.DataFrame({"product_id": failed_ids, "error": "malformed",
                                 "attempts": 3})  # fmt: skip
        return queries, failures

    return fake


def test_claude_gets_its_parameters_and_the_failure_bound(
    tiny_products, params, monkeypatch
):
    from product_search.providers import claude  # noqa: PLC0415

    seen: dict = {}
    monkeypatch.setattr(claude, "generate_with_claude", _fake_claude(["p2"], seen))
    params.update(provider="claude")
    params["claude"]["max_failure_rate"] = 0.34  # 6 products: 2 may fail
    queries, failures = nodes.generate_queries(tiny_products, AnswerCache("x"), params)
    assert len(queries) == 5
    assert queries["query_id"].tolist() == [f"p{i}-q0" for i in (1, 3, 4, 5, 6)]
    assert failures["product_id"].tolist() == ["p2"]
    assert seen["max_failures"] == 2
    assert seen["model"] == "claude-sonnet-4-20250514"
    assert seen["prompt_version"] == "v1"
    assert seen["queries_per_product"] == 4
    assert "max_failure_rate" not in seen


def test_filter_counts_each_cause(tiny_products, params):
    generated = pd.DataFrame(
        {
            "query_id": [f"q{i}" for i in range(8)],
            "product_id": ["p1", "p1", "p2", "p3", "p4", "p5", "p6", "zz"],
            "query": [
                '  "Cast IRON pan"  ',
                "",
                "ab",
                "word " * 25,
                "cast iron pan",
                "toy to keep dogs busy",
                "Wireless Earbuds!",
                "orphan query",
            ],  # fmt: skip
        }
    )
    kept, report = nodes.filter_queries(generated, tiny_products, params)
    assert kept["query"].tolist() == ["cast iron pan", "toy to keep dogs busy"]
    assert report["dropped"] == {"unknown_product": 1, "empty": 1, "too_short": 1,
                                 "too_long": 1, "repeats_title": 1,
                                 "duplicate": 1}  # fmt: skip
    assert report["input_queries"] == 8
    assert report["kept_queries"] == 2


def _queries(n_products: int, per_product: int) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"p{p}-q{i}", f"query {p} {i}", f"p{p}", "generated")
         for p in range(n_products) for i in range(per_product)],
        columns=["query_id", "query", "product_id", "source"],
    )  # fmt: skip


def test_split_by_query_is_80_20_and_seeded(params):
    queries = _queries(25, 4)
    train, validation, test = nodes.split_queries(queries, params)
    again, _, _ = nodes.split_queries(queries, params)
    # 20 test queries; 10% of the other 80 validate.
    assert (len(train), len(validation), len(test)) == (72, 8, 20)
    assert set(train["query_id"]).isdisjoint(test["query_id"])
    assert set(validation["query_id"]).isdisjoint(
        set(train["query_id"]) | set(test["query_id"])
    )
    pd.testing.assert_frame_equal(train, again)
    params["split"]["seed"] = 7
    other, _, _ = nodes.split_queries(queries, params)
    assert set(other["query_id"]) != set(train["query_id"])


def test_without_validation_shares_the_split_is_80_20(params):
    params["split"]["validation"] = {}
    train, validation, test = nodes.split_queries(_queries(25, 4), params)
    assert (len(train), len(validation), len(test)) == (80, 0, 20)
    assert list(validation.columns) == nodes.PAIR_COLUMNS


def test_split_by_product_keeps_test_products_out_of_training(params):
    params["split"]["split_by"] = "product"
    train, validation, test = nodes.split_queries(_queries(25, 4), params)
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
    train, validation, test = nodes.split_queries(pool, params)
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
        nodes.split_queries(_queries(5, 2), params)


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
    positives, negatives, report = nodes.prepare_search_logs(
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
    positives, negatives, _ = nodes.prepare_search_logs(
        log, _catalog("p1", "p2"), params
    )
    assert positives["product_id"].tolist() == ["p1"]
    assert negatives["product_id"].tolist() == ["p2"]


def test_absent_search_log_gives_empty_tables(params):
    positives, negatives, report = nodes.prepare_search_logs(
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
        nodes.prepare_search_logs(log, _catalog("p1"), params)


def test_match_key_ignores_case_whitespace_and_punctuation():
    assert nodes.match_key("  1/2 in. PVC-Tee ") == nodes.match_key("1 2 in pvc tee")


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
    pool, kept_negatives, report = nodes.mix_query_sources(
        generated, logged, negatives, judged, params
    )
    keys = set(pool["query"].map(nodes.match_key))
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
    pool, _, report = nodes.mix_query_sources(
        _queries(3, 2).drop(columns="source"), logged, logged[:0], no_judgments, params
    )
    again, _, _ = nodes.mix_query_sources(
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
        nodes.mix_query_sources(
            _queries(2, 2), _logged(), _logged(), pd.DataFrame({"query": []}), params
        )


def test_logged_queries_all_train_and_keep_their_source(params):
    logged = _logged(("saw", "p0"), ("drill", "p7")).assign(source="log")
    pool = pd.concat([_queries(25, 4), logged], ignore_index=True)
    train, _, test = nodes.split_queries(pool, params)
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
    train, validation, test = nodes.split_queries(
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
        nodes.split_queries(logged, params)


@pytest.mark.parametrize(
    ("title", "noun"),
    [
        ("Delta Vero 1-Handle Shower Only Faucet Trim Kit in Chrome (Valve Not "
         "Included)", "faucet trim kit"),
        ("Whirlpool 1.9 cu. ft. Over the Range Convection Microwave in Stainless "
         "Steel with Sensor Cooking", "range convection microwave"),
        ("Hampton Bay Wicker Patio Lounge Chair with Sky Blue Cushion",
         "patio lounge chair"),
        ("Everbilt 1 in. x 72 in. Aluminum Square Tube", "aluminum square tube"),
    ],
)  # fmt: skip
def test_offline_head_noun_is_what_the_product_is(title, noun):
    assert offline._head_noun(title, "") == noun


def test_offline_typos_are_rare_single_edits():
    query = "cordless impact wrench"
    noisy = [offline._shopper_noise(query, random.Random(seed)) for seed in range(400)]
    changed = [q for q in noisy if q != query]
    assert 0.1 < len(changed) / len(noisy) < 0.2
    for q in changed:
        joined = q.replace(" ", "") == query.replace(" ", "")
        one_edit = len(q.split()) == 3 and sum(
            a != b for a, b in zip(q.split(), query.split(), strict=True)
        ) == 1  # fmt: skip
        assert joined or one_edit, q
