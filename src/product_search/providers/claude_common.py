"""What the two Claude providers share: the request asked for each product and
how its answer is read and cached, the client, the checks of the arguments, the
error rules, the output frames and the summary.

``claude`` (:mod:`product_search.providers.claude`) sends one Messages API call
per product; ``claude_batch`` (:mod:`product_search.providers.claude_batch`)
sends the same requests through the Message Batches API at half the price.
Both fill the same answer cache, so either one's answers serve the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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

Answer = list[dict[str, str]]
MAX_RETRY_WAIT_S = 60.0


@dataclass(frozen=True)
class PromptSpec:
    """What a run asks Claude for every product, and how it reads the answers."""

    model: str
    prompt_version: str
    queries_per_product: int
    query_types: tuple[str, ...]
    max_tokens: int

    def cache_key(self, product: Mapping[str, Any]) -> str:
        """The answer's key: model, prompt version, count, types, product text."""
        return AnswerCache.key(
            self.model,
            self.prompt_version,
            str(self.queries_per_product),
            ",".join(self.query_types),
            str(product["text"]),
        )

    def params(self, product: Mapping[str, Any]) -> dict[str, Any]:
        """The Messages API parameters for one product: one forced tool call."""
        query_types = list(self.query_types)
        prompt = build_prompt(dict(product), self.queries_per_product, query_types)
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "tools": [record_queries_tool(query_types, self.queries_per_product)],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
            "messages": [{"role": "user", "content": prompt}],
        }

    def parse(self, message: anthropic.types.Message) -> Answer:
        """The validated queries of an answer (``MalformedAnswerError`` if none)."""
        return parse_answer(
            message, list(self.query_types), self.queries_per_product, self.max_tokens
        )


@dataclass
class Lookup:
    """The products of a run, split into those answered from the cache and
    those still to ask, as ``(position, product, cache key)``."""

    model: str
    records: list[dict[str, Any]]
    answers: dict[int, Answer]
    to_ask: list[tuple[int, dict[str, Any], str]]
    cached_hits: int


def look_up_answers(
    products: pd.DataFrame, cache: AnswerCache, spec: PromptSpec
) -> Lookup:
    """Which products the cache already answers for this ``spec``."""
    records = products.to_dict("records")
    answers: dict[int, Answer] = {}
    to_ask: list[tuple[int, dict[str, Any], str]] = []
    for position, product in enumerate(records):
        key = spec.cache_key(product)
        cached = cache.get(key)
        if cached is None:
            to_ask.append((position, product, key))
        else:
            answers[position] = cached["queries"]
    return Lookup(spec.model, records, answers, to_ask, len(answers))


def cache_answer(
    cache: AnswerCache, key: str, queries: Answer, input_tokens: int, output_tokens: int
) -> None:
    cache.put(
        key,
        {
            "queries": queries,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
    )


def check_arguments(
    products: pd.DataFrame,
    spec: PromptSpec,
    *,
    max_retries: int,
    **at_least_one: int,
) -> None:
    """Products with the prompt's columns, known query types, and counts of at
    least 1 (``queries_per_product`` and the named ``at_least_one``)."""
    missing = [c for c in [*PRODUCT_COLUMNS, "text"] if c not in products.columns]
    if missing:
        raise UserError(
            f"products lacks the column(s) {missing} that the Claude prompt needs."
        )
    unknown = [t for t in spec.query_types if t not in QUERY_TYPE_GUIDE]
    if unknown or not spec.query_types:
        raise UserError(
            f"Unknown or no query types {unknown or list(spec.query_types)}: choose "
            f"from {list(QUERY_TYPE_GUIDE)}."
        )
    counts = {"queries_per_product": spec.queries_per_product, **at_least_one}
    if min(counts.values()) < 1 or max_retries < 0:
        raise UserError(
            f"{' and '.join(counts)} must be at least 1 and max_retries at least 0, "
            f"got {', '.join(map(str, counts.values()))} and {max_retries}."
        )


def check_prices(price_per_mtok: Mapping[str, float]) -> dict[str, float]:
    if not {"input", "output"} <= set(price_per_mtok):
        raise UserError(
            "price_per_mtok needs 'input' and 'output' (USD per million tokens), "
            f"got {sorted(price_per_mtok)}."
        )
    return {kind: float(price_per_mtok[kind]) for kind in ("input", "output")}


def estimated_cost(
    input_tokens: int, output_tokens: int, prices: dict[str, float]
) -> float:
    """USD for the tokens at ``prices`` (per million tokens)."""
    return (input_tokens * prices["input"] + output_tokens * prices["output"]) / 1e6


def client_from_credentials(
    credentials: Mapping[str, str], timeout_s: float
) -> anthropic.Anthropic:
    """The SDK client, with its own retries off because we retry ourselves.

    From the catalog's ``anthropic`` credentials (``api_key``, ``auth_token``,
    ``base_url``); what they leave unset, the SDK looks up itself
    (``ANTHROPIC_BASE_URL``, a profile)."""
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


@dataclass
class Totals:
    """What a run's answers cost, and the products that got none (by position)."""

    input_tokens: int = 0
    output_tokens: int = 0
    failures: dict[int, dict[str, Any]] = field(default_factory=dict)


def finish(
    logger: logging.Logger,
    title: str,
    lookup: Lookup,
    totals: Totals,
    *,
    provider: str,
    prices: dict[str, float],
    asked: str,
    price_factor: float = 1.0,
    price_note: str = "",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(queries, failures) in product order, after one summary line of counts,
    tokens and cost (``prices`` times ``price_factor``) and a warning naming a
    failed product."""
    queries = pd.DataFrame(
        [
            {
                "product_id": str(lookup.records[position]["product_id"]),
                "query": query["query"],
                "query_type": query["query_type"],
                "provider": provider,
                "model": lookup.model,
            }
            for position in sorted(lookup.answers)
            for query in lookup.answers[position]
        ],
        columns=PROVIDER_COLUMNS,
    )
    failures = pd.DataFrame(
        [totals.failures[position] for position in sorted(totals.failures)],
        columns=FAILURE_COLUMNS,
    ).astype({"attempts": "int64"})
    cost = price_factor * estimated_cost(
        totals.input_tokens, totals.output_tokens, prices
    )
    logger.info(
        "%s: %d products, %d answered from the cache, %d asked in %s, %d failed; "
        "%d input + %d output tokens, estimated cost $%.4f%s.",
        title,
        len(lookup.records),
        lookup.cached_hits,
        len(lookup.to_ask),
        asked,
        len(failures),
        totals.input_tokens,
        totals.output_tokens,
        cost,
        price_note,
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


def too_many_failures(
    failed: int, max_failures: int, products: int, product_id: str, error: str
) -> QueryGenerationError:
    return QueryGenerationError(
        f"Claude gave no usable queries for {failed} products, more than the "
        f"{max_failures} that max_failure_rate allows for {products} products "
        f"(e.g. {product_id}: {error}). Answers received so far are cached: "
        "rerun to resume."
    )


def retrying(
    retried: Callable[[BaseException], bool],
    attempts: int,
    retry_wait_s: float,
    logger: logging.Logger,
) -> Retrying:
    """Up to ``attempts`` tries of what fails with a ``retried`` error, with
    exponential backoff from ``retry_wait_s`` seconds (at most a minute)."""
    return Retrying(
        retry=retry_if_exception(retried),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(
            multiplier=retry_wait_s, max=max(MAX_RETRY_WAIT_S, retry_wait_s)
        ),
        before_sleep=before_sleep_log(logger, logging.DEBUG),
        reraise=True,
    )


def is_transient(error: BaseException) -> bool:
    """Worth another try: rate limits, overload, 5xx, timeouts, bad answers."""
    if isinstance(error, anthropic.APIStatusError):
        return error.status_code in (408, 429) or error.status_code >= 500
    return isinstance(error, (anthropic.APIConnectionError, MalformedAnswerError))


def fatal_message(error: anthropic.APIStatusError, model: str) -> str | None:
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


def describe(error: Exception) -> str:
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
