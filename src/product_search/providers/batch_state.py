"""The parts of a ``claude_batch`` run that hold no client: each product's
batch request id (``custom_id``), the requests packed into batches within the
API's limits, the state file of the batches submitted and not read back yet
(what a killed run resumes from), and what one result line means."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from product_search.datasets.answer_cache import AnswerCache, write_json_atomically
from product_search.providers.claude_common import Answer, PromptSpec, describe
from product_search.providers.claude_prompt import MalformedAnswerError

# The Message Batches API's limits per batch.
MAX_REQUESTS_PER_BATCH = 100_000
MAX_BATCH_BYTES = 256_000_000

# Errored requests that the same request would meet again: failures at once,
# like the claude provider's 400.
NOT_RETRIED = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "billing_error",
    }
)
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
NOT_CUSTOM_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
# The JSON around the requests of a create call: {"requests": [...]}.
ENVELOPE_BYTES = len(b'{"requests": []}')


def custom_id(product_id: str, salt: int = 0) -> str:
    """The batch request id of a product: its own id when that is 1-64
    characters of ``[a-zA-Z0-9_-]``, else the id with the other characters
    replaced, cut to 51 characters, and a hash of the whole id."""
    if salt == 0 and CUSTOM_ID.fullmatch(product_id):
        return product_id
    digest = hashlib.sha256(f"{salt}\x1f{product_id}".encode()).hexdigest()[:12]
    return f"{NOT_CUSTOM_ID_CHARS.sub('_', product_id)[:51]}-{digest}"


def custom_ids(product_ids: Sequence[str]) -> list[str]:
    """One distinct ``custom_id`` per product id, in order; an id already
    taken (a repeated product id, or an id that equals another's hashed
    form) is hashed again with a salt until it is free."""
    taken: set[str] = set()
    ids = []
    for product_id in product_ids:
        salt = 0
        candidate = custom_id(product_id)
        while candidate in taken:
            salt += 1
            candidate = custom_id(product_id, salt)
        taken.add(candidate)
        ids.append(candidate)
    return ids


def state_path_for(cache: AnswerCache) -> Path:
    """The batch state file of a cache: ``<cache folder>.batches.json``."""
    return cache.path.with_name(f"{cache.path.name}.batches.json")


class BatchState:
    """The batches submitted and not read back yet, and the requests waiting to
    be submitted again: a JSON file rewritten atomically at every change, and
    removed when nothing is pending.

    ``batches``: ``{batch id: {"spec": PromptSpec fields, "requests":
    {custom_id: {"key", "product_id", "attempt"}}}}``; ``retries``: ``{cache
    key: {"attempts", "error"}}``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        self.batches: dict[str, dict[str, Any]] = saved.get("batches", {})
        self.retries: dict[str, dict[str, Any]] = saved.get("retries", {})

    def add(
        self,
        batch_id: str,
        spec: dict[str, Any],
        requests: Sequence[BatchRequest],
        product_ids: Mapping[str, str],
    ) -> None:
        """Write down a batch as soon as it is created: a run killed after this
        polls it again rather than submitting its requests twice."""
        self.batches[batch_id] = {
            "spec": spec,
            "requests": {
                r.custom_id: {
                    "key": r.key,
                    "product_id": product_ids[r.key],
                    "attempt": r.attempt,
                }
                for r in requests
            },
        }
        for request in requests:
            self.retries.pop(request.key, None)
        self.save()

    def pending(self, keys: Container[str]) -> tuple[list[str], set[str]]:
        """The saved batches that hold any of ``keys``, and every key they hold."""
        ids = [
            batch_id
            for batch_id, batch in self.batches.items()
            if any(r["key"] in keys for r in batch["requests"].values())
        ]
        held = {r["key"] for i in ids for r in self.batches[i]["requests"].values()}
        return ids, held

    def save(self) -> None:
        if self.batches or self.retries:
            write_json_atomically(
                self.path, {"batches": self.batches, "retries": self.retries}
            )
        else:
            self.path.unlink(missing_ok=True)


@dataclass
class BatchRequest:
    key: str
    attempt: int
    custom_id: str
    params: dict[str, Any]
    size: int


def split_requests(
    requests: list[BatchRequest], max_requests: int, max_bytes: int
) -> list[list[BatchRequest]]:
    """Consecutive chunks of at most ``max_requests`` requests and
    ``max_bytes`` bytes of JSON body each."""
    chunks: list[list[BatchRequest]] = []
    chunk: list[BatchRequest] = []
    size = ENVELOPE_BYTES
    for request in requests:
        added = request.size + (2 if chunk else 0)  # ", " between requests
        if chunk and (len(chunk) >= max_requests or size + added > max_bytes):
            chunks.append(chunk)
            chunk, size, added = [], ENVELOPE_BYTES, request.size
        chunk.append(request)
        size += added
    if chunk:
        chunks.append(chunk)
    return chunks


def outcome(result: Any, spec: PromptSpec) -> tuple[Answer | None, str | None, bool]:
    """(valid queries, or else the error and whether it is worth another
    batch) of one result line."""
    if result.type == "errored":
        error = result.error.error
        retried = error.type not in NOT_RETRIED
        return None, f"errored: {error.type}: {error.message}", retried
    if result.type != "succeeded":
        return None, f"{result.type} before Claude answered it", True
    try:
        return spec.parse(result.message), None, False
    except MalformedAnswerError as error:
        return None, describe(error), True
