"""The claude_batch provider against a fake Message Batches API on localhost
(tests/providers/fake_batches.py), reached through the SDK over real HTTP."""

from __future__ import annotations

import json
import logging
import re

import pandas as pd
import pytest

from product_search.datasets.answer_cache import AnswerCache
from product_search.providers import FAILURE_COLUMNS, QueryGenerationError
from product_search.providers.batch_state import (
    BatchState,
    custom_id,
    custom_ids,
    state_path_for,
)
from product_search.providers.claude_batch import generate_with_claude_batches
from tests.providers.fake_batches import (
    FakeBatchesAPI,
    canceled,
    errored,
    expired,
    good_answer,
    queries_for,
    succeeded,
    title_of,
)

MODEL = "claude-test-model"
TYPES = ["specific", "general", "need_based", "attribute_focused"]
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@pytest.fixture(autouse=True)
def no_developer_settings(monkeypatch):
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def run(products, cache, fake, **overrides):
    arguments = {
        "queries_per_product": 4,
        "query_types": TYPES,
        "model": MODEL,
        "prompt_version": "v1",
        "max_tokens": 512,
        "max_retries": 2,
        "timeout_s": 5.0,
        "price_per_mtok": {"input": 3.0, "output": 15.0},
        "poll_interval_s": 0.01,
        "max_wait_s": 30.0,
        "retry_wait_s": 0.001,
        "credentials": {"api_key": "test-key", "base_url": fake.url},
    }
    return generate_with_claude_batches(products, cache, **{**arguments, **overrides})


def expected_rows(products):
    return pd.DataFrame(
        [
            (pid, q["query"], q["query_type"], "claude_batch", MODEL)
            for pid, title in zip(
                products["product_id"], products["title"], strict=True
            )
            for q in queries_for(title, TYPES)
        ],
        columns=["product_id", "query", "query_type", "provider", "model"],
    )


def by_title(plan):
    """A fake Claude: ``plan[title][attempt - 1]`` (the last one repeats), a
    good answer for titles not in the plan."""

    def answer(custom_id, params, attempt):
        results = plan.get(title_of(params))
        if results is None:
            return good_answer(custom_id, params, attempt)
        result = results[min(attempt, len(results)) - 1]
        return good_answer(custom_id, params, attempt) if result == "good" else result

    return answer


def test_batch_is_polled_until_it_ends(cache, tiny_products):
    with FakeBatchesAPI(polls_before_end=3) as fake:
        queries, failures = run(tiny_products, cache, fake)

    [batch] = fake.creates
    # One request per product, keyed by its id, with the claude provider's
    # request: the model, the forced tool call and the prompt.
    assert [r["custom_id"] for r in batch.requests] == [f"p{i}" for i in range(1, 7)]
    params = batch.requests[0]["params"]
    assert params["model"] == MODEL and params["max_tokens"] == 512
    assert params["tool_choice"] == {"type": "tool", "name": "record_queries"}
    assert "Title: Cast Iron Skillet 10 inch\n" in params["messages"][0]["content"]
    # Three polls in progress, the fourth sees it ended, then the SDK's
    # results() retrieves it once more and reads the JSONL.
    assert fake.calls("GET", batch.id) == 5
    assert fake.calls("GET", "/results") == 1
    pd.testing.assert_frame_equal(queries, expected_rows(tiny_products))
    assert list(failures.columns) == FAILURE_COLUMNS and failures.empty
    assert len(cache) == 6
    assert not state_path_for(cache).exists()  # nothing pending


def test_shuffled_mixed_results_are_retried_in_later_batches(
    cache, tiny_products, caplog
):
    titles = dict(zip(tiny_products["product_id"], tiny_products["title"], strict=True))
    unknown_type = succeeded({"queries": [{"query": "pan", "query_type": "cheap"}]})
    blank = succeeded({"queries": [{"query": "  ", "query_type": "general"}]})
    plan = {
        titles["p2"]: [unknown_type, "good"],
        titles["p3"]: [errored("api_error"), "good"],
        titles["p4"]: [expired(), canceled(), "good"],
        titles["p5"]: [errored("overloaded_error", "Overloaded")],
        titles["p6"]: [blank],
    }
    with (
        FakeBatchesAPI(answer=by_title(plan), polls_before_end=1, seed=3) as fake,
        caplog.at_level(logging.INFO, logger="product_search.providers.claude_batch"),
    ):
        queries, failures = run(tiny_products, cache, fake, max_retries=2)

    first, second, third = fake.creates
    submitted = [[r["custom_id"] for r in batch.requests] for batch in fake.creates]
    assert submitted == [
        ["p1", "p2", "p3", "p4", "p5", "p6"],
        ["p2", "p3", "p4", "p5", "p6"],  # everything but p1, in a later batch
        ["p4", "p5", "p6"],  # p4 canceled, p5 errored, p6 malformed again
    ]
    # The results came back in another order than submitted, and still joined.
    assert fake.served[first.id] != submitted[0]
    assert sorted(fake.served[first.id]) == submitted[0]
    pd.testing.assert_frame_equal(
        queries, expected_rows(tiny_products[tiny_products["product_id"] <= "p4"])
    )
    assert failures.to_dict("records") == [
        {
            "product_id": "p5",
            "error": "errored: overloaded_error: Overloaded",
            "attempts": 3,
        },
        {
            "product_id": "p6",
            "error": "malformed answer: queries.0.query: String should have at "
            "least 1 character",
            "attempts": 3,
        },
    ]
    assert len(cache) == 4  # only valid answers are cached
    assert not state_path_for(cache).exists()
    # Succeeded results, valid or not: p1, p2, p6; p2, p3, p6; p4, p6. Eight
    # of 100 input and 50 output tokens, at half of $3 and $15 per million.
    assert (
        "Claude batches (claude-test-model): 6 products, 0 answered from the "
        "cache, 6 asked in 14 requests over 3 new batches and 0 resumed, 2 "
        "failed; 800 input + 400 output tokens, estimated cost $0.0042 at the "
        "batch price." in caplog.messages
    )


def test_invalid_request_is_a_failure_without_another_batch(cache, tiny_products):
    plan = {"Running Shoes": [errored("invalid_request_error", "prompt too long")]}
    with FakeBatchesAPI(answer=by_title(plan)) as fake:
        queries, failures = run(tiny_products, cache, fake)

    assert len(fake.creates) == 1
    assert failures.to_dict("records") == [
        {
            "product_id": "p4",
            "error": "errored: invalid_request_error: prompt too long",
            "attempts": 1,
        }
    ]
    assert queries["product_id"].nunique() == 5


def test_a_404_right_after_create_is_retried(cache, tiny_products):
    with FakeBatchesAPI(not_found_after_create=2) as fake:
        queries, failures = run(tiny_products, cache, fake)

    [batch] = fake.creates
    polls = [status for _, path, status in fake.log if path.endswith(batch.id)]
    assert polls[:3] == [404, 404, 200]
    pd.testing.assert_frame_equal(queries, expected_rows(tiny_products))
    assert failures.empty


def test_a_lasting_404_stops_the_run_and_keeps_the_batch_id(cache, tiny_products):
    with FakeBatchesAPI(not_found_after_create=100) as fake:
        with pytest.raises(QueryGenerationError) as raised:
            run(tiny_products, cache, fake, max_call_retries=2)

    [batch] = fake.creates
    assert str(raised.value).startswith(
        f"Could not poll the batch {batch.id}: 404 not_found_error:"
    )
    assert "rerun to resume" in str(raised.value)
    assert fake.calls("GET", batch.id) == 3  # max_call_retries + 1 attempts
    assert list(BatchState(state_path_for(cache)).batches) == [batch.id]


def test_a_run_stopped_while_polling_resumes_the_same_batches(cache, tiny_products):
    with FakeBatchesAPI(polls_before_end=2) as fake:
        fake.hold.set()  # the batches stay in progress
        with pytest.raises(QueryGenerationError) as raised:
            run(tiny_products, cache, fake, max_requests_per_batch=2, max_wait_s=0)
        ids = [batch.id for batch in fake.creates]
        assert len(ids) == 3
        state = BatchState(state_path_for(cache))
        assert list(state.batches) == ids
        assert str(raised.value) == (
            f"Claude batches {', '.join(ids)} have not ended within max_wait_s. "
            f"Their ids are saved in {state.path}: rerun to resume polling them "
            "(nothing cached or pending is submitted again)."
        )
        assert len(cache) == 0

        fake.hold.clear()
        queries, failures = run(tiny_products, cache, fake, max_requests_per_batch=2)

    assert fake.calls("POST") == 3  # the resumed run created none
    assert set(fake.submissions.values()) == {1}
    pd.testing.assert_frame_equal(queries, expected_rows(tiny_products))
    assert failures.empty
    assert not state.path.exists()


def test_a_killed_run_resubmits_neither_cached_nor_pending_products(
    cache, tiny_products, monkeypatch
):
    from product_search.providers import claude_batch  # noqa: PLC0415

    with FakeBatchesAPI() as fake:
        run(tiny_products.head(2), cache, fake)  # p1, p2 answered and cached
        fake.hold.set()

        def killed(seconds):
            raise KeyboardInterrupt

        # Killed at its first wait between polls: p3 and p4 were submitted.
        with monkeypatch.context() as patch:
            patch.setattr(claude_batch.time, "sleep", killed)
            with pytest.raises(KeyboardInterrupt):
                run(tiny_products.head(4), cache, fake)
        fake.hold.clear()
        queries, _ = run(tiny_products, cache, fake)

    submitted = [[r["custom_id"] for r in batch.requests] for batch in fake.creates]
    assert submitted == [["p1", "p2"], ["p3", "p4"], ["p5", "p6"]]
    pd.testing.assert_frame_equal(queries, expected_rows(tiny_products))


def test_cached_rerun_makes_no_request_and_needs_no_key(cache, tiny_products):
    with FakeBatchesAPI() as fake:
        first, _ = run(tiny_products, cache, fake)
    with FakeBatchesAPI() as fake:
        rerun, failures = run(tiny_products, cache, fake, credentials={})

    assert fake.log == []
    pd.testing.assert_frame_equal(rerun, first)
    assert failures.empty


def test_answers_are_shared_with_the_claude_provider_cache(cache, tiny_products):
    with FakeBatchesAPI() as fake:
        run(tiny_products, cache, fake)

    key = cache.key(MODEL, "v1", "4", ",".join(TYPES), tiny_products["text"].iloc[0])
    assert cache.get(key) == {
        "queries": queries_for("Cast Iron Skillet 10 inch", TYPES),
        "usage": {"input_tokens": 100, "output_tokens": 50},
    }


def test_base_url_from_the_environment_and_a_wrong_key(
    cache, tiny_products, monkeypatch
):
    with FakeBatchesAPI() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        with pytest.raises(QueryGenerationError) as raised:
            run(tiny_products, cache, fake, credentials={"api_key": "wrong"})
        queries, _ = run(
            tiny_products, cache, fake, credentials={"api_key": "test-key"}
        )

    assert str(raised.value) == (
        "Claude rejected the API key (401 authentication_error): check "
        "ANTHROPIC_API_KEY."
    )
    assert fake.log[0] == ("POST", "/v1/messages/batches", 401)
    assert len(queries) == 24


def test_batches_are_split_by_request_count_and_bytes(cache, tiny_products, tmp_path):
    with FakeBatchesAPI() as fake:
        run(tiny_products, cache, fake, max_requests_per_batch=4)
    assert [len(batch.requests) for batch in fake.creates] == [4, 2]

    sizes = [len(json.dumps(r)) for r in fake.creates[0].requests]
    with FakeBatchesAPI() as fake:
        # Room for two of the largest requests in a body, not three.
        queries, _ = run(
            tiny_products,
            AnswerCache(tmp_path / "another_cache"),
            fake,
            max_batch_bytes=2 * max(sizes) + 40,
        )
    assert [len(batch.requests) for batch in fake.creates] == [2, 2, 2]
    assert len(queries) == 24


def test_a_request_over_the_byte_limit_is_a_failure(cache, tiny_products):
    with FakeBatchesAPI() as fake:
        queries, failures = run(tiny_products, cache, fake, max_batch_bytes=100)

    assert fake.log == [] and queries.empty
    assert len(failures) == 6
    assert (
        failures["error"]
        .str.match(r"request of \d+ bytes exceeds max_batch_bytes")
        .all()
    )
    assert (failures["attempts"] == 0).all()


def test_custom_ids_are_valid_distinct_and_stable():
    awkward = [
        "p1",  # valid: kept
        "sku/123 (blue)",
        "x" * 65,
        "",
        "héllo wörld",
        "dup",
        "dup",  # a repeated id still gets its own custom_id
        "sku_123__blue_",
    ]
    hashed = custom_id("sku/123 (blue)")
    awkward.append(hashed)  # a valid id equal to another product's hashed form

    ids = custom_ids(awkward)

    assert all(CUSTOM_ID.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == custom_ids(awkward)  # deterministic
    assert ids[0] == "p1" and ids[5] == "dup" and ids[7] == "sku_123__blue_"
    assert ids[1] == hashed and re.fullmatch(r"sku_123__blue_-[0-9a-f]{12}", hashed)
    assert ids[2].startswith("x" * 51 + "-") and len(ids[2]) == 64
    assert ids[6] != "dup" and ids[8] != hashed


def test_awkward_product_ids_join_back_to_their_products(cache, tiny_products):
    products = tiny_products.assign(
        product_id=["sku/1", "sku 1", "ß" * 70, "sku_1", "", "a-b_c"]
    )
    with FakeBatchesAPI(seed=1) as fake:
        queries, failures = run(products, cache, fake)

    [batch] = fake.creates
    sent = [r["custom_id"] for r in batch.requests]
    assert all(CUSTOM_ID.fullmatch(i) for i in sent) and len(set(sent)) == 6
    assert sent[3] == "sku_1" and sent[5] == "a-b_c"
    pd.testing.assert_frame_equal(queries, expected_rows(products))
    assert failures.empty


def test_too_many_failures_stop_the_run(cache, tiny_products):
    with FakeBatchesAPI(answer=lambda *_: errored("invalid_request_error")) as fake:
        with pytest.raises(
            QueryGenerationError, match="for 6 products, more than the 1"
        ):
            run(tiny_products, cache, fake, max_failures=1)
    assert len(fake.creates) == 1
    assert not state_path_for(cache).exists()  # the batch was read and dropped
