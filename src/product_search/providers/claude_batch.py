"""Claude writes the shopper queries through the Message Batches API.

The same request per product as the ``claude`` provider (prompt, forced tool
call, validation, answer cache, failure table: see
:mod:`product_search.providers.claude_common`), sent as batches that Claude
answers within 24 hours at half the price. One run:

1. looks the products up in the answer cache and in the batch state file (the
   batches submitted and not read back yet, next to the cache);
2. submits the products that are in neither, in batches of at most
   ``max_requests_per_batch`` requests and ``max_batch_bytes`` bytes, and
   writes each batch's id to the state file as soon as it is created;
3. polls the pending batches every ``poll_interval_s`` seconds; as each ends,
   reads its results (in any order, joined by ``custom_id``), caches every
   valid answer and drops the batch from the state file;
4. submits again, in a later batch, what came back errored, expired, canceled
   or malformed, up to ``max_retries`` times; then records it as a failure.

A run stopped while it waits (killed, Ctrl-C, or past ``max_wait_s``) leaves
the batch ids in the state file (:mod:`.batch_state`): the rerun polls the
same batches and submits nothing that is cached or pending."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import pandas as pd

from product_search.datasets.answer_cache import AnswerCache
from product_search.errors import UserError
from product_search.providers import QueryGenerationError
from product_search.providers.batch_state import (
    ENVELOPE_BYTES,
    MAX_BATCH_BYTES,
    MAX_REQUESTS_PER_BATCH,
    BatchRequest,
    BatchState,
    custom_ids,
    outcome,
    split_requests,
    state_path_for,
)
from product_search.providers.claude_common import (
    Answer,
    Lookup,
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

logger = logging.getLogger(__name__)

PROVIDER = "claude_batch"
# The Message Batches API's price: half the Messages API's for input and
# output tokens alike.
BATCH_PRICE_FACTOR = 0.5

T = TypeVar("T")


@dataclass
class _Totals(Totals):
    submitted: int = 0
    requests: int = 0
    resumed: int = 0


def generate_with_claude_batches(
    products: pd.DataFrame,
    cache: AnswerCache,
    *,
    queries_per_product: int,
    query_types: list[str],
    model: str,
    prompt_version: str,
    max_tokens: int,
    max_retries: int,
    timeout_s: float,
    price_per_mtok: dict[str, float],
    max_requests_per_batch: int = MAX_REQUESTS_PER_BATCH,
    max_batch_bytes: int = MAX_BATCH_BYTES,
    poll_interval_s: float = 60.0,
    max_wait_s: float = 86_400.0,
    max_call_retries: int = 8,
    client: anthropic.Anthropic | None = None,
    credentials: Mapping[str, str] | None = None,
    retry_wait_s: float = 1.0,
    max_failures: int | None = None,
    state_path: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ask Claude, in message batches, for ``queries_per_product`` shopper
    queries per product (see the module's docstring for the steps).

    ``max_retries`` bounds the later batches a request is submitted again in;
    API calls that fail (rate limits, overload, 5xx, timeouts, and a 404 for a
    batch not visible yet) are retried up to ``max_call_retries`` times with
    exponential backoff from ``retry_wait_s``. A rejected key stops the run with a
    ``QueryGenerationError``, and so do more than ``max_failures`` failed
    products, and pending batches past ``max_wait_s`` seconds of the run (their
    ids stay saved: a rerun resumes). ``client``, ``credentials`` and
    ``timeout_s`` are the claude provider's; the state file is
    ``state_path``, by default next to the cache (:func:`state_path_for`).

    Returns:
        (queries with columns ``product_id, query, query_type, provider,
        model``; failures with columns ``product_id, error, attempts``)
    """
    spec = PromptSpec(
        model, prompt_version, queries_per_product, tuple(query_types), max_tokens
    )
    check_arguments(
        products,
        spec,
        max_retries=max_retries,
        max_requests_per_batch=max_requests_per_batch,
        max_batch_bytes=max_batch_bytes,
    )
    if min(poll_interval_s, max_wait_s, max_call_retries) < 0:
        raise UserError(
            "poll_interval_s, max_wait_s and max_call_retries must be at least 0, "
            f"got {poll_interval_s}, {max_wait_s} and {max_call_retries}."
        )
    prices = check_prices(price_per_mtok)
    lookup = look_up_answers(products, cache, spec)
    totals = _Totals()
    if lookup.to_ask:
        run = _BatchRun(
            lookup=lookup,
            cache=cache,
            spec=spec,
            state=BatchState(state_path or state_path_for(cache)),
            client=client or client_from_credentials(credentials or {}, timeout_s),
            totals=totals,
            max_retries=max_retries,
            max_call_retries=max_call_retries,
            max_failures=max_failures,
            retry_wait_s=retry_wait_s,
        )
        run.go(
            max_requests_per_batch=max_requests_per_batch,
            max_batch_bytes=max_batch_bytes,
            poll_interval_s=poll_interval_s,
            deadline=time.monotonic() + max_wait_s,
        )

    return finish(
        logger,
        f"Claude batches ({model})",
        lookup,
        totals,
        provider=PROVIDER,
        prices=prices,
        asked=(
            f"{totals.requests} requests over {totals.submitted} new batches "
            f"and {totals.resumed} resumed"
        ),
        price_factor=BATCH_PRICE_FACTOR,
        price_note=" at the batch price",
    )


@dataclass
class _BatchRun:
    """One run's products still to answer, and the batches that answer them."""

    lookup: Lookup
    cache: AnswerCache
    spec: PromptSpec
    state: BatchState
    client: anthropic.Anthropic
    totals: _Totals
    max_retries: int
    max_call_retries: int
    max_failures: int | None
    retry_wait_s: float
    positions: dict[str, list[int]] = field(init=False)
    products: dict[str, dict[str, Any]] = field(init=False)
    custom_ids: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        # One request per cache key: products with the same text share it.
        self.positions = {}
        self.products = {}
        for position, product, key in self.lookup.to_ask:
            self.positions.setdefault(key, []).append(position)
            self.products.setdefault(key, product)
        ids = custom_ids([str(p["product_id"]) for p in self.products.values()])
        self.custom_ids = dict(zip(self.products, ids, strict=True))

    def go(
        self,
        *,
        max_requests_per_batch: int,
        max_batch_bytes: int,
        poll_interval_s: float,
        deadline: float,
    ) -> None:
        pending, waiting = self.state.pending(self.positions)
        self.totals.resumed = len(pending)
        if pending:
            logger.info(
                "Claude batches: resuming %d pending batches (%s) from %s.",
                len(pending),
                ", ".join(pending),
                self.state.path,
            )
        if len(pending) < len(self.state.batches):
            others = len(self.state.batches) - len(pending)
            logger.info("Claude batches: %d pending batches of other products or "
                        "settings are left for their own run.", others)  # fmt: skip
        # Attempts of requests to submit again, kept for this run's products.
        self.state.retries = {
            key: retry
            for key, retry in self.state.retries.items()
            if key in self.positions
        }
        to_submit = [
            (key, self.state.retries.get(key, {}).get("attempts", 0) + 1)
            for key in self.positions
            if key not in waiting
        ]
        while to_submit or pending:
            pending += self._submit(to_submit, max_requests_per_batch, max_batch_bytes)
            # Submitted again in product order, whatever the results' order.
            to_submit = sorted(
                self._wait(pending, poll_interval_s, deadline),
                key=lambda item: self.positions[item[0]][0],
            )
            pending = []

    def _submit(
        self, to_submit: list[tuple[str, int]], max_requests: int, max_bytes: int
    ) -> list[str]:
        """Create batches for ``(key, attempt)``; each id is saved at once."""
        requests = []
        for key, attempt in to_submit:
            params = self.spec.params(self.products[key])
            size = len(
                json.dumps({"custom_id": self.custom_ids[key], "params": params})
            )
            if size + ENVELOPE_BYTES > max_bytes:
                error = f"request of {size} bytes exceeds max_batch_bytes"
                self._fail(key, error, attempt - 1)
                continue
            requests.append(
                BatchRequest(key, attempt, self.custom_ids[key], params, size)
            )
        created = []
        for chunk in split_requests(requests, max_requests, max_bytes):
            batch = self._call(
                lambda chunk=chunk: self.client.messages.batches.create(
                    requests=[
                        {"custom_id": r.custom_id, "params": r.params} for r in chunk
                    ]
                ),
                what=f"submit a batch of {len(chunk)} requests",
                not_found_retried=False,
            )
            self.state.add(
                batch.id,
                asdict(self.spec),
                chunk,
                {r.key: str(self.products[r.key]["product_id"]) for r in chunk},
            )
            created.append(batch.id)
            self.totals.submitted += 1
            self.totals.requests += len(chunk)
            logger.info(
                "Claude batches: submitted %s with %d requests (saved in %s).",
                batch.id,
                len(chunk),
                self.state.path,
            )
        return created

    def _wait(
        self, pending: list[str], poll_interval_s: float, deadline: float
    ) -> list[tuple[str, int]]:
        """Poll until every pending batch has ended and been read; what to
        submit again."""
        to_submit: list[tuple[str, int]] = []
        pending = list(pending)
        while pending:
            for batch_id in list(pending):
                batch = self._call(
                    lambda batch_id=batch_id: self.client.messages.batches.retrieve(
                        batch_id
                    ),
                    what=f"poll the batch {batch_id}",
                )
                counts = batch.request_counts
                logger.debug(
                    "Claude batches: %s is %s (%d processing, %d succeeded).",
                    batch_id,
                    batch.processing_status,
                    counts.processing,
                    counts.succeeded,
                )
                if batch.processing_status == "ended":
                    to_submit += self._read(batch_id)
                    pending.remove(batch_id)
            if pending and time.monotonic() >= deadline:
                raise QueryGenerationError(
                    f"Claude batches {', '.join(pending)} have not ended within "
                    f"max_wait_s. Their ids are saved in {self.state.path}: rerun "
                    "to resume polling them (nothing cached or pending is "
                    "submitted again)."
                )
            if pending:
                time.sleep(poll_interval_s)
        return to_submit

    def _read(self, batch_id: str) -> list[tuple[str, int]]:
        """Cache the batch's valid answers, record or schedule the rest, and
        drop the batch from the state file; what to submit again."""
        batch = self.state.batches[batch_id]
        spec = PromptSpec(
            **{**batch["spec"], "query_types": tuple(batch["spec"]["query_types"])}
        )
        requests: dict[str, dict[str, Any]] = batch["requests"]
        lines = self._call(
            lambda: list(self.client.messages.batches.results(batch_id)),
            what=f"read the results of the batch {batch_id}",
        )
        to_submit: list[tuple[str, int]] = []
        answered = 0
        unread = set(requests)
        for line in lines:
            request = requests.get(line.custom_id)
            if request is None or line.custom_id not in unread:
                logger.warning(
                    "Claude batches: %s gave a result for an unknown or repeated "
                    "custom_id %r; ignored.",
                    batch_id,
                    line.custom_id,
                )
                continue
            unread.discard(line.custom_id)
            if line.result.type == "succeeded":
                usage = line.result.message.usage
                self.totals.input_tokens += usage.input_tokens
                self.totals.output_tokens += usage.output_tokens
            queries, error, retried = outcome(line.result, spec)
            if queries is not None:
                answered += 1
                cache_answer(
                    self.cache,
                    request["key"],
                    queries,
                    usage.input_tokens,
                    usage.output_tokens,
                )
                self._answer(request["key"], queries)
            else:
                to_submit += self._unanswered(request, str(error), retried=retried)
        for missing in sorted(unread):
            to_submit += self._unanswered(
                requests[missing], "no result for the request", retried=True
            )
        del self.state.batches[batch_id]
        self.state.save()
        logger.info(
            "Claude batches: %s ended: %d of %d requests answered, %d to submit again.",
            batch_id,
            answered,
            len(requests),
            len(to_submit),
        )
        failed = len(self.totals.failures)
        if self.max_failures is not None and failed > self.max_failures:
            first = self.totals.failures[min(self.totals.failures)]
            raise too_many_failures(
                failed,
                self.max_failures,
                len(self.lookup.records),
                first["product_id"],
                first["error"],
            )
        return to_submit

    def _answer(self, key: str, queries: Answer) -> None:
        for position in self.positions.get(key, []):
            self.lookup.answers[position] = queries

    def _unanswered(
        self, request: dict[str, Any], error: str, *, retried: bool
    ) -> list[tuple[str, int]]:
        """Submit again (and say so in the state file), or record a failure."""
        key, attempt = request["key"], int(request["attempt"])
        if key not in self.positions:
            return []  # not a product of this run: its own run will ask again
        if retried and attempt <= self.max_retries:
            self.state.retries[key] = {"attempts": attempt, "error": error}
            return [(key, attempt + 1)]
        self._fail(key, error, attempt)
        return []

    def _fail(self, key: str, error: str, attempts: int) -> None:
        self.state.retries.pop(key, None)
        for position in self.positions[key]:
            self.totals.failures[position] = {
                "product_id": str(self.lookup.records[position]["product_id"]),
                "error": error,
                "attempts": attempts,
            }

    def _call(
        self, call: Callable[[], T], *, what: str, not_found_retried: bool = True
    ) -> T:
        """One Batches API call, transient errors (and a 404 for a batch not
        visible yet) retried with backoff; what stays wrong stops the run."""

        def retried(error: BaseException) -> bool:
            not_found = isinstance(error, anthropic.NotFoundError)
            return is_transient(error) or (not_found_retried and not_found)

        try:
            return retrying(
                retried, self.max_call_retries + 1, self.retry_wait_s, logger
            )(call)
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as error:
            fatal = (
                isinstance(error, anthropic.APIStatusError)
                and error.status_code != 404
                and fatal_message(error, self.spec.model)
            )
            raise QueryGenerationError(
                fatal
                or f"Could not {what}: {describe(error)}. The ids of the submitted "
                f"batches are saved in {self.state.path}: rerun to resume."
            ) from None
