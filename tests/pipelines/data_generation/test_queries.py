"""generate_queries and filter_queries on the tiny catalog."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from product_search.datasets import AnswerCache
from product_search.pipelines.data_generation.queries import (
    filter_queries,
    generate_queries,
)


def test_offline_queries_are_deterministic_and_cycle_types(tiny_products, params):
    cache = AnswerCache("unused")
    first, failures = generate_queries(tiny_products, cache, params)
    again, _ = generate_queries(tiny_products, cache, params)

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
    queries, _ = generate_queries(tiny_products, AnswerCache("unused"), params)
    assert len(queries) == 12
    assert set(queries["query_type"]) == {"general"}


def test_offline_rejects_types_it_cannot_write(tiny_products, params):
    params["query_types"] = ["comparison"]
    with pytest.raises(ValueError, match="does not know the query type"):
        generate_queries(tiny_products, AnswerCache("unused"), params)


def test_auto_without_a_key_falls_back_to_offline_with_a_warning(
    tiny_products, params, monkeypatch, caplog
):
    # A key in the shell but not among the node's inputs: the inputs decide.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-in-the-shell")
    params["provider"] = "auto"
    with caplog.at_level(logging.WARNING):
        queries, _ = generate_queries(tiny_products, AnswerCache("x"), params, {})
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

    queries, _ = generate_queries(tiny_products, AnswerCache("x"), params, credentials)

    assert (queries["provider"] == "claude").all()
    assert seen["credentials"] == credentials


def test_unknown_provider_is_refused(tiny_products, params):
    params["provider"] = "gpt"
    with pytest.raises(ValueError, match="Unknown query provider 'gpt'"):
        generate_queries(tiny_products, AnswerCache("x"), params)


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
    queries, failures = generate_queries(tiny_products, AnswerCache("x"), params)
    assert len(queries) == 5
    assert queries["query_id"].tolist() == [f"p{i}-q0" for i in (1, 3, 4, 5, 6)]
    assert failures["product_id"].tolist() == ["p2"]
    assert seen["max_failures"] == 2
    assert seen["model"] == "claude-sonnet-4-20250514"
    assert seen["prompt_version"] == "v1"
    assert seen["queries_per_product"] == 4
    assert "max_failure_rate" not in seen


@pytest.mark.parametrize(
    ("batch_above", "expected"), [(5, "claude_batch"), (6, "claude")]
)
def test_auto_with_a_key_uses_batches_above_the_product_count(
    tiny_products, params, monkeypatch, batch_above, expected
):
    from product_search.providers import claude, claude_batch  # noqa: PLC0415

    called: dict = {"claude": {}, "claude_batch": {}}
    monkeypatch.setattr(
        claude, "generate_with_claude", _fake_claude([], called["claude"])
    )
    monkeypatch.setattr(
        claude_batch,
        "generate_with_claude_batches",
        _fake_claude([], called["claude_batch"]),
    )
    params["provider"] = "auto"
    params["claude_batch"]["batch_above"] = batch_above  # 6 products

    generate_queries(tiny_products, AnswerCache("x"), params, {"api_key": "k"})

    assert [name for name, seen in called.items() if seen] == [expected]
    assert "batch_above" not in called[expected]


def test_claude_batch_gets_the_claude_settings_with_its_own_on_top(
    tiny_products, params, monkeypatch
):
    from product_search.providers import claude_batch  # noqa: PLC0415

    seen: dict = {}
    monkeypatch.setattr(
        claude_batch, "generate_with_claude_batches", _fake_claude(["p2"], seen)
    )
    params["provider"] = "claude_batch"
    params["claude"]["max_failure_rate"] = 0.34  # 6 products: 2 may fail

    queries, failures = generate_queries(tiny_products, AnswerCache("x"), params)

    assert failures["product_id"].tolist() == ["p2"]
    assert len(queries) == 5
    assert seen == {
        "queries_per_product": 4,
        "query_types": ["specific", "general", "need_based", "attribute_focused"],
        "max_failures": 2,
        "credentials": {},
        # from the claude section
        "model": "claude-sonnet-4-20250514",
        "prompt_version": "v1",
        "max_tokens": 1024,
        "price_per_mtok": {"input": 3.0, "output": 15.0},
        # the claude_batch section's own, and its max_retries and timeout_s
        "max_retries": 2,
        "timeout_s": 600,
        "max_call_retries": 8,
        "max_requests_per_batch": 100_000,
        "max_batch_bytes": 256_000_000,
        "poll_interval_s": 60,
        "max_wait_s": 86_400,
    }


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
    kept, report = filter_queries(generated, tiny_products, params)
    assert kept["query"].tolist() == ["cast iron pan", "toy to keep dogs busy"]
    assert report["dropped"] == {"unknown_product": 1, "empty": 1, "too_short": 1,
                                 "too_long": 1, "repeats_title": 1,
                                 "duplicate": 1}  # fmt: skip
    assert report["input_queries"] == 8
    assert report["kept_queries"] == 2
