"""Claude writes the shopper queries: one forced tool call per product.

Each product costs one Messages API call (plus retries). Answers are cached by
(model, prompt version, query count, query types, product text) and written as
soon as they arrive, so a rerun, or a run after a crash, asks only for what is
missing. What is asked and how the answer is checked is in
:mod:`product_search.providers.claude_prompt`; what this provider shares with
``claude_batch`` is in :mod:`product_search.providers.claude_common`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from typing import Any

import anthropic
import pandas as pd

from product_search.datasets.answer_cache import AnswerCache
from product_search.providers import QueryGenerationError
from product_search.providers.claude_common import (
    Answer,
    PromptSpec,
    Totals,
    cache_answer,
    check_arguments,
    check_prices,
    client_from_credentials,
    describe,
    fatal_message,
    finish,
    is_transient,
    look_up_answers,
    retrying,
    too_many_failures,
)
from product_search.providers.claude_prompt import MalformedAnswerError

logger = logging.getLogger(__name__)

PROVIDER = "claude"


class _RunStoppedError(Exception):
    """Another product hit a fatal error, or the user pressed Ctrl-C."""


@dataclass
class _Outcome:
    """What asking Claude about one product gave, and what it cost."""

    queries: Answer | None = None
    error: str | None = None
    stopped: bool = False
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class _Totals(Totals):
    calls: int = 0


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
    spec = PromptSpec(
        model, prompt_version, queries_per_product, tuple(query_types), max_tokens
    )
    check_arguments(
        products, spec, max_retries=max_retries, max_concurrency=max_concurrency
    )
    prices = check_prices(price_per_mtok)
    lookup = look_up_answers(products, cache, spec)

    totals = _Totals()
    if lookup.to_ask:
        ask = partial(
            _ask_claude,
            client=client or client_from_credentials(credentials or {}, timeout_s),
            cache=cache,
            spec=spec,
            max_retries=max_retries,
            retry_wait_s=retry_wait_s,
        )
        _ask_all(
            ask,
            lookup.to_ask,
            max_concurrency,
            lookup.answers,
            totals,
            max_failures=max_failures,
        )

    return finish(
        logger,
        f"Claude ({model})",
        lookup,
        totals,
        provider=PROVIDER,
        prices=prices,
        asked=f"{totals.calls} API calls",
    )


def _ask_all(
    ask: partial[_Outcome],
    to_ask: list[tuple[int, dict[str, Any], str]],
    max_concurrency: int,
    answers: dict[int, Answer],
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
                        raise too_many_failures(
                            len(totals.failures),
                            max_failures,
                            len(to_ask),
                            str(product_id),
                            str(outcome.error),
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
    spec: PromptSpec,
    max_retries: int,
    retry_wait_s: float,
) -> _Outcome:
    """One product: call, validate, retry what is transient, cache the answer."""
    outcome = _Outcome()
    params = spec.params(product)

    def attempt() -> Answer:
        if stop.is_set():
            raise _RunStoppedError
        outcome.attempts += 1
        message = client.messages.create(**params)
        outcome.input_tokens += message.usage.input_tokens
        outcome.output_tokens += message.usage.output_tokens
        return spec.parse(message)

    try:
        outcome.queries = retrying(is_transient, max_retries + 1, retry_wait_s, logger)(
            attempt
        )
    except _RunStoppedError:
        outcome.stopped = True
        return outcome
    except anthropic.APIStatusError as error:
        fatal = fatal_message(error, spec.model)
        if fatal:
            stop.set()
            raise QueryGenerationError(fatal) from None
        outcome.error = describe(error)
        return outcome
    except (anthropic.APIConnectionError, MalformedAnswerError) as error:
        outcome.error = describe(error)
        return outcome
    cache_answer(
        cache, key, outcome.queries, outcome.input_tokens, outcome.output_tokens
    )
    return outcome
