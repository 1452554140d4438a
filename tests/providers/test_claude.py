"""The Claude provider against a local fake of the Messages API (respx)."""

from __future__ import annotations

import json
import logging
import threading

import httpx
import pandas as pd
import pytest

from product_search.providers import FAILURE_COLUMNS, QueryGenerationError
from product_search.providers.claude import generate_with_claude
from product_search.providers.claude_prompt import TOOL_NAME

MODEL = "claude-test-model"
TYPES = ["specific", "general", "need_based", "attribute_focused"]


def run(products, cache, client, **overrides):
    arguments = {
        "queries_per_product": 4,
        "query_types": TYPES,
        "model": MODEL,
        "prompt_version": "v1",
        "max_tokens": 512,
        "max_concurrency": 2,
        "max_retries": 2,
        "timeout_s": 5.0,
        "price_per_mtok": {"input": 3.0, "output": 15.0},
        "client": client,
        "retry_wait_s": 0.001,
    }
    return generate_with_claude(products, cache, **{**arguments, **overrides})


def message(content, *, stop_reason="tool_use", input_tokens=100, output_tokens=50):
    """A Messages API response body with the given content blocks."""
    return httpx.Response(
        200,
        json={
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
    )


def tool_call(queries):
    return [
        {
            "type": "tool_use",
            "id": "toolu_test",
            "name": TOOL_NAME,
            "input": {"queries": queries},
        }
    ]


def api_error(status, error_type, text="fake error"):
    return httpx.Response(
        status, json={"type": "error", "error": {"type": error_type, "message": text}}
    )


def body(request) -> dict:
    return json.loads(request.content)


def product_in(request, products) -> str:
    """The id of the product whose title the prompt shows."""
    prompt = body(request)["messages"][0]["content"]
    ids = [
        pid
        for pid, title in zip(products["product_id"], products["title"], strict=True)
        if f"Title: {title}\n" in prompt
    ]
    assert len(ids) == 1, prompt
    return ids[0]


def good_queries(product_id):
    return [{"query": f"{product_id} {t}", "query_type": t} for t in TYPES]


def answer_each(products, broken=None):
    """A fake Claude: four good queries per product, or ``broken[pid]``."""

    def side_effect(request):
        product_id = product_in(request, products)
        if broken and product_id in broken:
            return broken[product_id]
        return message(tool_call(good_queries(product_id)))

    return side_effect


def expected_rows(product_ids):
    return pd.DataFrame(
        [(pid, f"{pid} {t}", t, "claude", MODEL) for pid in product_ids for t in TYPES],
        columns=["product_id", "query", "query_type", "provider", "model"],
    )


def test_request_asks_for_the_count_with_a_forced_tool(
    claude_api, claude_client, cache, tiny_products
):
    route = claude_api.post("/v1/messages").mock(side_effect=answer_each(tiny_products))

    run(tiny_products.head(1), cache, claude_client, queries_per_product=3)

    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer test-key"
    sent = body(request)
    assert sent["model"] == MODEL
    assert sent["max_tokens"] == 512
    # API version 2026-10-21 answers 400 to any sampling parameter.
    assert not {"temperature", "top_p", "top_k"} & set(sent)
    assert sent["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    [tool] = sent["tools"]
    assert tool["name"] == TOOL_NAME
    item = tool["input_schema"]["properties"]["queries"]["items"]
    assert item["properties"]["query_type"]["enum"] == TYPES
    assert item["required"] == ["query", "query_type"]
    assert tool["input_schema"]["required"] == ["queries"]
    [turn] = sent["messages"]
    assert turn["role"] == "user"
    prompt = turn["content"]
    assert "Write 3 realistic search queries" in prompt
    assert "Record exactly 3 queries" in prompt
    for line in (
        "Title: Cast Iron Skillet 10 inch",
        "Brand: Lodge",
        "Category: kitchen",
        "Price: 29.90",
        "Description: Pre-seasoned cast iron pan for searing and baking.",
    ):
        assert line in prompt
    for query_type in TYPES:
        assert f"- {query_type}: " in prompt
    assert "gift for someone who loves cooking" in prompt


def test_prompt_shows_only_the_requested_types_and_a_missing_price(
    claude_api, claude_client, cache, tiny_products
):
    route = claude_api.post("/v1/messages").mock(
        return_value=message(tool_call([{"query": "pan", "query_type": "general"}]))
    )
    products = tiny_products.head(1).assign(price=float("nan"))

    run(products, cache, claude_client, query_types=["general", "need_based"])

    sent = body(route.calls.last.request)
    prompt = sent["messages"][0]["content"]
    assert "Price: not given" in prompt
    assert "- general: " in prompt and "- need_based: " in prompt
    assert "- specific: " not in prompt and "- attribute_focused: " not in prompt
    enum = sent["tools"][0]["input_schema"]["properties"]["queries"]["items"]
    assert enum["properties"]["query_type"]["enum"] == ["general", "need_based"]


def test_good_answers_become_rows_in_product_order(
    claude_api, claude_client, cache, tiny_products
):
    route = claude_api.post("/v1/messages").mock(side_effect=answer_each(tiny_products))

    queries, failures = run(tiny_products, cache, claude_client, max_concurrency=3)

    assert route.call_count == 6
    pd.testing.assert_frame_equal(queries, expected_rows(tiny_products["product_id"]))
    assert list(failures.columns) == FAILURE_COLUMNS
    assert failures.empty


def test_answer_is_trimmed_to_the_count_and_stripped(
    claude_api, claude_client, cache, tiny_products
):
    claude_api.post("/v1/messages").mock(
        return_value=message(
            tool_call(
                [
                    {"query": "  cast iron pan ", "query_type": "general"},
                    {"query": "lodge skillet", "query_type": "specific"},
                    {"query": "one too many", "query_type": "general"},
                ]
            )
        )
    )

    queries, _ = run(tiny_products.head(1), cache, claude_client, queries_per_product=2)

    assert queries["query"].tolist() == ["cast iron pan", "lodge skillet"]
    assert queries["query_type"].tolist() == ["general", "specific"]


def test_rate_limit_then_success_is_retried(
    claude_api, claude_client, cache, tiny_products
):
    route = claude_api.post("/v1/messages").mock(
        side_effect=[
            api_error(429, "rate_limit_error"),
            message(tool_call(good_queries("p1"))),
        ]
    )

    queries, failures = run(tiny_products.head(1), cache, claude_client)

    assert route.call_count == 2
    pd.testing.assert_frame_equal(queries, expected_rows(["p1"]))
    assert failures.empty


@pytest.mark.parametrize(
    "first",
    [
        api_error(529, "overloaded_error"),
        api_error(500, "api_error"),
        api_error(503, "api_error"),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
    ],
    ids=["529", "500", "503", "connection", "timeout"],
)
def test_transient_errors_are_retried(
    first, claude_api, claude_client, cache, tiny_products
):
    route = claude_api.post("/v1/messages").mock(
        side_effect=[first, first, message(tool_call(good_queries("p1")))]
    )

    queries, failures = run(tiny_products.head(1), cache, claude_client, max_retries=2)

    assert route.call_count == 3
    pd.testing.assert_frame_equal(queries, expected_rows(["p1"]))
    assert failures.empty


def test_lasting_overload_is_a_failure_row_after_all_attempts(
    claude_api, claude_client, cache, tiny_products
):
    overloaded = api_error(529, "overloaded_error", "Overloaded")
    claude_api.post("/v1/messages").mock(
        side_effect=answer_each(tiny_products, broken={"p2": overloaded})
    )

    queries, failures = run(tiny_products.head(3), cache, claude_client, max_retries=3)

    pd.testing.assert_frame_equal(queries, expected_rows(["p1", "p3"]))
    assert failures.to_dict("records") == [
        {"product_id": "p2", "error": "529 overloaded_error: Overloaded", "attempts": 4}
    ]


def test_bad_request_fails_the_product_without_retrying(
    claude_api, claude_client, cache, tiny_products
):
    rejected = api_error(400, "invalid_request_error", "prompt is too long")
    route = claude_api.post("/v1/messages").mock(
        side_effect=answer_each(tiny_products, broken={"p1": rejected})
    )

    queries, failures = run(tiny_products.head(2), cache, claude_client)

    assert route.call_count == 2
    assert queries["product_id"].unique().tolist() == ["p2"]
    assert failures.to_dict("records") == [
        {
            "product_id": "p1",
            "error": "400 invalid_request_error: prompt is too long",
            "attempts": 1,
        }
    ]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            message([{"type": "text", "text": "Here are some queries: ..."}]),
            f"no {TOOL_NAME} tool call in the answer",
        ),
        (
            message(tool_call([{"query": "pan", "query_type": "cheap"}])),
            "unknown query type(s) ['cheap']",
        ),
        (
            message(tool_call([{"query": "   ", "query_type": "general"}])),
            "queries.0.query: String should have at least 1 character",
        ),
        (
            message(tool_call([])),
            "queries: List should have at least 1 item after validation, not 0",
        ),
        (
            message(tool_call(good_queries("p3")), stop_reason="max_tokens"),
            "the answer was cut off at 512 tokens",
        ),
    ],
    ids=["no-tool-call", "unknown-type", "blank-query", "no-queries", "cut-off"],
)
def test_lasting_malformed_answer_is_a_failure_row_and_the_run_goes_on(
    claude_api, claude_client, cache, tiny_products, *, answer, reason
):
    route = claude_api.post("/v1/messages").mock(
        side_effect=answer_each(tiny_products, broken={"p3": answer})
    )

    queries, failures = run(tiny_products, cache, claude_client, max_retries=2)

    others = ["p1", "p2", "p4", "p5", "p6"]
    pd.testing.assert_frame_equal(queries, expected_rows(others))
    assert failures.to_dict("records") == [
        {"product_id": "p3", "error": f"malformed answer: {reason}", "attempts": 3}
    ]
    assert route.call_count == 5 + 3


def test_failures_past_the_bound_stop_the_run_early(
    claude_api, claude_client, cache, tiny_products, monkeypatch
):
    # An unreachable or broken API fails every product: stop at the second
    # failure instead of spending every product's retries.
    from product_search.providers import claude  # noqa: PLC0415

    stops: list[threading.Event] = []
    ask = claude._ask_claude

    def ask_and_record_the_stop(product, key, stop, **kwargs):
        stops.append(stop)
        return ask(product, key, stop, **kwargs)

    monkeypatch.setattr(claude, "_ask_claude", ask_and_record_the_stop)
    calls = 0

    def overloaded(request):
        nonlocal calls
        calls += 1
        if calls > 6:
            # The third product's first attempt, made before the run stopped:
            # held until it has, so that its retry sees the stop however slow
            # the machine (a timed backoff could not promise that).
            assert stops[-1].wait(timeout=30)
        return api_error(529, "overloaded_error")

    claude_api.post("/v1/messages").mock(side_effect=overloaded)

    with pytest.raises(QueryGenerationError, match=r"for 2 products, more than the 1"):
        run(tiny_products, cache, claude_client, max_concurrency=1, max_failures=1)

    # Two products with three attempts each; the worker may already have made
    # the third product's first attempt, never its retry. Without the bound:
    # 6 x 3 calls.
    assert calls in (6, 7)


def test_failures_within_the_bound_are_returned(
    claude_api, claude_client, cache, tiny_products
):
    claude_api.post("/v1/messages").mock(
        side_effect=answer_each(
            tiny_products, broken={"p3": api_error(400, "invalid_request_error")}
        )
    )

    queries, failures = run(tiny_products, cache, claude_client, max_failures=1)

    assert failures["product_id"].tolist() == ["p3"]
    assert len(queries) == 5 * 4


def test_malformed_then_good_answer_is_retried(
    claude_api, claude_client, cache, tiny_products
):
    route = claude_api.post("/v1/messages").mock(
        side_effect=[
            message([{"type": "text", "text": "sorry"}]),
            message(tool_call(good_queries("p1"))),
        ]
    )

    queries, failures = run(tiny_products.head(1), cache, claude_client)

    assert route.call_count == 2
    pd.testing.assert_frame_equal(queries, expected_rows(["p1"]))
    assert failures.empty


def test_cached_rerun_makes_no_call_and_needs_no_key(
    claude_api, claude_client, cache, tiny_products
):
    first_route = claude_api.post("/v1/messages").mock(
        side_effect=answer_each(tiny_products)
    )
    first, _ = run(tiny_products, cache, claude_client)
    assert first_route.call_count == 6
    assert len(cache) == 6

    claude_api.routes.clear()
    rerun_route = claude_api.post("/v1/messages").mock(
        side_effect=answer_each(tiny_products)
    )
    # No client and no ANTHROPIC_API_KEY: nothing is missing, so none is needed.
    rerun, failures = run(tiny_products, cache, None)

    assert rerun_route.call_count == 0
    pd.testing.assert_frame_equal(rerun, first)
    assert failures.empty


def test_cache_keeps_queries_and_usage_and_a_new_prompt_version_misses(
    claude_api, claude_client, cache, tiny_products
):
    route = claude_api.post("/v1/messages").mock(side_effect=answer_each(tiny_products))
    products = tiny_products.head(1)
    run(products, cache, claude_client)

    key = cache.key(MODEL, "v1", "4", ",".join(TYPES), products["text"].iloc[0])
    assert cache.get(key) == {
        "queries": good_queries("p1"),
        "usage": {"input_tokens": 100, "output_tokens": 50},
    }
    run(products, cache, claude_client, prompt_version="v2")
    run(products, cache, claude_client, queries_per_product=3)
    assert route.call_count == 3


def test_answers_are_cached_as_they_arrive(
    claude_api, claude_client, cache, tiny_products
):
    """A run that dies on product 3 keeps products 1 and 2 for the rerun."""
    answers = answer_each(tiny_products)
    calls = []

    def dies_on_third(request):
        calls.append(request)
        if len(calls) == 3:
            return api_error(401, "authentication_error", "invalid x-api-key")
        return answers(request)

    claude_api.post("/v1/messages").mock(side_effect=dies_on_third)
    with pytest.raises(QueryGenerationError):
        run(tiny_products, cache, claude_client, max_concurrency=1)
    assert len(cache) == 2

    queries, _ = run(tiny_products, cache, claude_client, max_concurrency=1)

    assert len(calls) == 3 + 4
    pd.testing.assert_frame_equal(queries, expected_rows(tiny_products["product_id"]))


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (
            401,
            "authentication_error",
            "Claude rejected the API key (401 authentication_error): "
            "check ANTHROPIC_API_KEY.",
        ),
        (
            403,
            "permission_error",
            "Claude denied access (403 permission_error): check that the API key "
            "may use the model 'claude-test-model'.",
        ),
        (
            404,
            "not_found_error",
            "Claude does not know the model 'claude-test-model' (404 "
            "not_found_error): check data_generation.claude.model (and "
            "ANTHROPIC_BASE_URL if set).",
        ),
    ],
)
def test_rejected_key_or_unknown_model_stops_the_run_at_once(
    claude_api, claude_client, cache, tiny_products, *, status, error_type, expected
):
    route = claude_api.post("/v1/messages").mock(
        return_value=api_error(status, error_type)
    )

    with pytest.raises(QueryGenerationError) as raised:
        run(tiny_products.head(1), cache, claude_client, max_retries=5)

    assert str(raised.value) == expected
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert route.call_count == 1


def test_client_from_the_credentials_uses_their_key_and_no_sdk_retries(
    claude_api, cache, tiny_products, monkeypatch
):
    # The credentials are what the caller passed; the shell's key is not read.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "env-key")
    route = claude_api.post("/v1/messages").mock(
        return_value=api_error(500, "api_error", "boom")
    )

    _, failures = run(
        tiny_products.head(1),
        cache,
        None,
        max_retries=0,
        credentials={"api_key": "credentials-key"},
    )

    # The SDK would retry a 500 twice by default; ours is the only retry loop.
    assert route.call_count == 1
    assert route.calls.last.request.headers["authorization"] == (
        "Bearer credentials-key"
    )
    assert failures.to_dict("records") == [
        {"product_id": "p1", "error": "500 api_error: boom", "attempts": 1}
    ]


def test_missing_credentials_is_a_clear_error(
    claude_api, cache, tiny_products, monkeypatch, tmp_path
):
    # No key, no profile on disk, no workload identity.
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (
        "ANTHROPIC_CONFIG_DIR",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_IDENTITY_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(QueryGenerationError, match="set ANTHROPIC_API_KEY"):
        run(tiny_products.head(1), cache, None)


def test_concurrency_never_exceeds_the_bound(
    claude_api, claude_client, cache, tiny_products
):
    answers = answer_each(tiny_products)
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    # Each request waits for a second one to be in flight: two workers meet
    # here in turn (six products, three meetings), one worker would time out,
    # and no timing of the machine decides the outcome.
    both_in_flight = threading.Barrier(2, timeout=30)

    def paired_answer(request):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        both_in_flight.wait()
        with lock:
            in_flight -= 1
        return answers(request)

    claude_api.post("/v1/messages").mock(side_effect=paired_answer)

    queries, _ = run(tiny_products, cache, claude_client, max_concurrency=2)

    assert peak == 2
    assert len(queries) == 24


def test_summary_logs_calls_cache_hits_tokens_and_cost(
    claude_api, claude_client, cache, tiny_products, caplog
):
    claude_api.post("/v1/messages").mock(side_effect=answer_each(tiny_products))
    run(tiny_products.head(1), cache, claude_client)

    with caplog.at_level(logging.INFO, logger="product_search.providers.claude"):
        run(tiny_products.head(3), cache, claude_client)

    # Two fresh products: 2 x 100 input tokens at $3/M + 2 x 50 output at $15/M.
    assert (
        "Claude (claude-test-model): 3 products, 1 answered from the cache, 2 asked "
        "in 2 API calls, 0 failed; 200 input + 100 output tokens, estimated cost "
        "$0.0021." in caplog.messages
    )


@pytest.mark.parametrize(
    ("change", "message_part"),
    [
        ({"query_types": ["specific", "cheap"]}, "Unknown or no query types"),
        ({"queries_per_product": 0}, "must be at least 1"),
        ({"price_per_mtok": {"input": 3.0}}, "price_per_mtok needs"),
    ],
)
def test_bad_arguments_are_named(
    change, message_part, claude_client, cache, tiny_products
):
    with pytest.raises(ValueError, match=message_part):
        run(tiny_products, cache, claude_client, **change)


def test_products_without_the_prompt_columns_are_rejected(
    claude_client, cache, tiny_products
):
    with pytest.raises(ValueError, match=r"\['brand', 'text'\]"):
        run(tiny_products.drop(columns=["brand", "text"]), cache, claude_client)
