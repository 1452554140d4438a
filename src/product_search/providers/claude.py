"""Claude writes the shopper queries: one forced tool call per product.

Each product costs one Messages API call (plus retries). Answers are cached by
(model, prompt version, query count, query types, product text) and written as
soon as they arrive, so a rerun, or a run after a crash, asks only for what is
missing. What is asked and how the answer is checked is in
:mod:`product_search.providers.claude_prompt`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anthropic
import pandas as pd
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from product_search.datasets.answer_cache import AnswerCache
from product_search.errors import UserError
from product_search.providers import (
    FAILURE_COLUMNS,
    PRODUCT_COLUMNS,
    PROVIDER_COLUMNS,
    QueryGenerationError,
)
from product_search.providers.claude_prompt import (
    QUERY_TYPE_GUIDE,
    TOOL_NAME,
    MalformedAnswerError,
    build_prompt,
    parse_answer,
    record_queries_tool,
)

logger = logging.getLogger(__name__)

PROVIDER = "claude"
MAX_RETRY_WAIT_S = 60.0


class _RunStoppedError(Exception):
    """Another product hit a fatal error, or the user pressed Ctrl-C."""


@dataclass
class _Outcome:
    """What asking Claude about one product gave, and what it cost."""

    queries: list[dict[str, str]] | None = None
    error: str | None = None
    stopped: bool = False
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class _Totals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    failures: dict[int, dict[str, Any]] = field(default_factory=dict)


def generate_with_claude(
    products: pd.DataFrame,
    cache: AnswerCache,
    *,
    queries_per_product: int,
    query_types: list[str],
    model: str,
    prompt_version: str,
    max_tokens: int,
    max_concurrency: int,
    max_retries: int,
    timeout_s: float,
    price_per_mtok: dict[str, float],
    client: anthropic.Anthropic | None = None,
    credentials: Mapping[str, str] | None = None,
    retry_wait_s: float = 1.0,
    max_failures: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ask Claude for ``queries_per_product`` shopper queries per product.

    Rate limits, overload, 5xx, timeouts and malformed answers are retried with
    exponential backoff; a product that still fails goes to the failures frame
    and the run goes on. A rejected key or unknown model stops the run with a
    ``QueryGenerationError``, and so do more than ``max_failures`` failed
    products, as soon as they are reached (an unreachable API or a broken
    prompt would otherwise cost every product its retries). Without
    ``client``, one is built from ``credentials`` (``api_key``, ``auth_token``,
    ``base_url``: the catalog's ``anthropic`` credentials), and only when some
    product is not cached yet; what they leave unset, the SDK looks up itself
    (a profile, for instance). There is no temperature: API version
    2026-10-21, which anthropic>=2 sends, rejects sampling parameters.

    Returns:
        (queries with columns ``product_id, query, query_type, provider,
        model``; failures with columns ``product_id, error, attempts``)
    """
    _check_arguments(
        products, query_types, queries_per_product, max_concurrency, max_retries
    )
    prices = _check_prices(price_per_mtok)
    records = products.to_dict("records")
    answers: dict[int, list[dict[str, str]]] = {}
    to_ask: list[tuple[int, dict[str, Any], str]] = []
    for position, product in enumerate(records):
        key = AnswerCache.key(
            model,
            prompt_version,
            str(queries_per_product),
            ",".join(query_types),
            str(product["text"]),
        )
        cached = cache.get(key)
        if cached is None:
            to_ask.append((position, product, key))
        else:
            answers[position] = cached["queries"]
    cached_hits = len(answers)

    totals = _Totals()
    if to_ask:
        ask = partial(
            _ask_claude,
            client=client or _client_from_credentials(credentials or {}, timeout_s),
            cache=cache,
            request={
                "model": model,
                "max_tokens": max_tokens,
                "tools": [record_queries_tool(query_types, queries_per_product)],
                "tool_choice": {"type": "tool", "name": TOOL_NAME},
            },
            query_types=query_types,
            queries_per_product=queries_per_product,
            max_retries=max_retries,
            retry_wait_s=retry_wait_s,
        )
        _ask_all(
            ask, to_ask, max_concurrency, answers, totals, max_failures=max_failures
        )

    queries = pd.DataFrame(
        [
            {
                "product_id": str(records[position]["product_id"]),
                "query": query["query"],
                "query_type": query["query_type"],
                "provider": PROVIDER,
                "model": model,
            }
            for position in sorted(answers)
            for query in answers[position]
        ],
        columns=PROVIDER_COLUMNS,
    )
    failures = pd.DataFrame(
        [totals.failures[position] for position in sorted(totals.failures)],
        columns=FAILURE_COLUMNS,
    ).astype({"attempts": "int64"})
    cost = (
        totals.input_tokens * prices["input"] + totals.output_tokens * prices["output"]
    ) / 1e6
    logger.info(
        "Claude (%s): %d products, %d answered from the cache, %d asked in %d API "
        "calls, %d failed; %d input + %d output tokens, estimated cost $%.4f.",
        model,
        len(records),
        cached_hits,
        len(to_ask),
        totals.calls,
        len(failures),
        totals.input_tokens,
        totals.output_tokens,
        cost,
    )
    if len(failures):
        first = failures.iloc[0]
        logger.warning(
            "Claude gave no usable queries for %d products (e.g. %s: %s).",
            len(failures),
            first["product_id"],
            first["error"],
        )
    return queries, failures


def _check_arguments(
    products: pd.DataFrame,
    query_types: list[str],
    queries_per_product: int,
    max_concurrency: int,
    max_retries: int,
) -> None:
    missing = [c for c in [*PRODUCT_COLUMNS, "text"] if c not in products.columns]
    if missing:
        raise UserError(
            f"products lacks the column(s) {missing} that the Claude prompt needs."
        )
    unknown = [t for t in query_types if t not in QUERY_TYPE_GUIDE]
    if unknown or not query_types:
        raise UserError(
            f"Unknown or no query types {unknown or query_types}: choose from "
            f"{list(QUERY_TYPE_GUIDE)}."
        )
    if queries_per_product < 1 or max_concurrency < 1 or max_retries < 0:
        raise UserError(
            "queries_per_product and max_concurrency must be at least 1 and "
            f"max_retries at least 0, got {queries_per_product}, "
            f"{max_concurrency} and {max_retries}."
        )


def _check_prices(price_per_mtok: dict[str, float]) -> dict[str, float]:
    if not {"input", "output"} <= set(price_per_mtok):
        raise UserError(
            "price_per_mtok needs 'input' and 'output' (USD per million tokens), "
            f"got {sorted(price_per_mtok)}."
        )
    return {kind: float(price_per_mtok[kind]) for kind in ("input", "output")}


def _client_from_credentials(
    credentials: Mapping[str, str], timeout_s: float
) -> anthropic.Anthropic:
    """The SDK client, with its own retries off because we retry per product."""
    given = {
        key: credentials[key]
        for key in ("api_key", "auth_token", "base_url")
        if credentials.get(key)
    }
    try:
        client = anthropic.Anthropic(max_retries=0, timeout=timeout_s, **given)
    except (anthropic.AnthropicError, ValueError) as error:
        raise QueryGenerationError(
            f"Could not set up the Claude client: {error}"
        ) from None
    if client.api_key is None and client.auth_token is None and not client.credentials:
        raise QueryGenerationError(
            "No Claude credentials found: set ANTHROPIC_API_KEY, or set "
            "data_generation.provider to offline."
        )
    return client


def _ask_all(
    ask: partial[_Outcome],
    to_ask: list[tuple[int, dict[str, Any], str]],
    max_concurrency: int,
    answers: dict[int, list[dict[str, str]]],
    totals: _Totals,
    *,
    max_failures: int | None,
) -> None:
    """Ask for every product, ``max_concurrency`` at a time, into the totals;
    stop once more than ``max_failures`` products have failed."""
    progress_every = max(1, len(to_ask) // 10)
    stop = threading.Event()
    with ThreadPoolExecutor(max_concurrency, thread_name_prefix="claude") as pool:
        futures = {
            pool.submit(ask, product, key, stop): (position, product["product_id"])
            for position, product, key in to_ask
        }
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                outcome = future.result()
                if outcome.stopped:
                    # The fatal error that stopped it is raised by its own future.
                    continue
                position, product_id = futures[future]
                totals.calls += outcome.attempts
                totals.input_tokens += outcome.input_tokens
                totals.output_tokens += outcome.output_tokens
                if outcome.queries is None:
                    totals.failures[position] = {
                        "product_id": str(product_id),
                        "error": outcome.error,
                        "attempts": outcome.attempts,
                    }
                    if max_failures is not None and len(totals.failures) > max_failures:
                        raise QueryGenerationError(
                            f"Claude gave no usable queries for {len(totals.failures)} "
                            f"products, more than the {max_failures} that "
                            f"max_failure_rate allows for {len(to_ask)} products "
                            f"(e.g. {product_id}: {outcome.error}). Answers received "
                            "so far are cached: rerun to resume."
                        )
                else:
                    answers[position] = outcome.queries
                if done % progress_every == 0:
                    logger.info("Claude: %d/%d products done.", done, len(to_ask))
        except BaseException:
            # A fatal error or Ctrl-C: ask nothing more; answers already
            # received are in the cache.
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _ask_claude(
    product: dict[str, Any],
    key: str,
    stop: threading.Event,
    *,
    client: anthropic.Anthropic,
    cache: AnswerCache,
    request: dict[str, Any],
    query_types: list[str],
    queries_per_product: int,
    max_retries: int,
    retry_wait_s: float,
) -> _Outcome:
    """One product: call, validate, retry what is transient, cache the answer."""
    outcome = _Outcome()
    prompt = build_prompt(product, queries_per_product, query_types)

    def attempt() -> list[dict[str, str]]:
        if stop.is_set():
            raise _RunStoppedError
        outcome.attempts += 1
        message = client.messages.create(
            **request, messages=[{"role": "user", "content": prompt}]
        )
        outcome.input_tokens += message.usage.input_tokens
        outcome.output_tokens += message.usage.output_tokens
        return parse_answer(
            message, query_types, queries_per_product, request["max_tokens"]
        )

    retrying = Retrying(
        retry=retry_if_exception(_is_transient),
        stop=stop_after_attempt(max_retries + 1),
        wait=wait_exponential(
            multiplier=retry_wait_s, max=max(MAX_RETRY_WAIT_S, retry_wait_s)
        ),
        before_sleep=before_sleep_log(logger, logging.DEBUG),
        reraise=True,
    )
    try:
        outcome.queries = retrying(attempt)
    except _RunStoppedError:
        outcome.stopped = True
        return outcome
    except anthropic.APIStatusError as error:
        fatal = _fatal_message(error, request["model"])
        if fatal:
            stop.set()
            raise QueryGenerationError(fatal) from None
        outcome.error = _describe(error)
        return outcome
    except (anthropic.APIConnectionError, MalformedAnswerError) as error:
        outcome.error = _describe(error)
        return outcome
    cache.put(
        key,
        {
            "queries": outcome.queries,
            "usage": {
                "input_tokens": outcome.input_tokens,
                "output_tokens": outcome.output_tokens,
            },
        },
    )
    return outcome


def _is_transient(error: BaseException) -> bool:
    """Worth another try: rate limits, overload, 5xx, timeouts, bad answers."""
    if isinstance(error, anthropic.APIStatusError):
        return error.status_code in (408, 429) or error.status_code >= 500
    return isinstance(error, (anthropic.APIConnectionError, MalformedAnswerError))


def _fatal_message(error: anthropic.APIStatusError, model: str) -> str | None:
    """One sentence for an error that no product can get past, else None."""
    status = f"{error.status_code} {error.type or 'error'}"
    messages = {
        401: f"Claude rejected the API key ({status}): check ANTHROPIC_API_KEY.",
        402: (
            f"Claude refused the request for billing reasons ({status}): "
            f"{error.api_message or 'check the account'}."
        ),
        403: (
            f"Claude denied access ({status}): check that the API key may use "
            f"the model {model!r}."
        ),
        404: (
            f"Claude does not know the model {model!r} ({status}): check "
            "data_generation.claude.model (and ANTHROPIC_BASE_URL if set)."
        ),
    }
    return messages.get(error.status_code)


def _describe(error: Exception) -> str:
    """The reason recorded in the failures frame."""
    if isinstance(error, MalformedAnswerError):
        return f"malformed answer: {error}"
    if isinstance(error, anthropic.APITimeoutError):
        return "request timed out"
    if isinstance(error, anthropic.APIConnectionError):
        return f"connection error: {error.__cause__ or error}"
    if isinstance(error, anthropic.APIStatusError):
        detail = error.api_message or error.message
        return f"{error.status_code} {error.type or 'error'}: {detail}"
    return str(error)
