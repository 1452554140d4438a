"""A fake Message Batches API on localhost, for the claude_batch tests and
bench/claude_batch_demo.py.

A real HTTP server in a thread that implements, closely enough for the
``anthropic`` SDK, ``POST /v1/messages/batches``, ``GET
/v1/messages/batches/{id}`` and ``GET /v1/messages/batches/{id}/results``
(JSONL, shuffled). The SDK reaches it through ``base_url`` (or
``ANTHROPIC_BASE_URL``). What each request gets is decided by ``answer``;
every request the server sees is logged.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from product_search.providers.claude_prompt import TOOL_NAME

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
BATCH_PATH = re.compile(r"/v1/messages/batches/(?P<id>[^/]+)(?P<results>/results)?")
TITLE = re.compile(r"^Title: (?P<title>.*)$", re.MULTILINE)
TIMESTAMP = "2026-01-01T00:00:00Z"

# (custom_id, the request's params, how many times this custom_id was
# submitted, this one included) -> the request's result.
Answer = Callable[[str, dict[str, Any], int], dict[str, Any]]


def title_of(params: dict[str, Any]) -> str:
    """The product title that the request's prompt shows."""
    match = TITLE.search(params["messages"][0]["content"])
    assert match, params
    return match["title"]


def queries_for(title: str, query_types: list[str]) -> list[dict[str, str]]:
    return [{"query": f"{title.lower()} {t}", "query_type": t} for t in query_types]


def succeeded(
    tool_input: dict[str, Any],
    *,
    stop_reason: str = "tool_use",
    input_tokens: int = 100,
    output_tokens: int = 50,
) -> dict[str, Any]:
    return {
        "type": "succeeded",
        "message": {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": "claude-test-model",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_fake",
                    "name": TOOL_NAME,
                    "input": tool_input,
                }
            ],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
    }


def errored(error_type: str = "api_error", message: str = "fake error") -> dict:
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": error_type, "message": message}},
    }


def expired() -> dict[str, Any]:
    return {"type": "expired"}


def canceled() -> dict[str, Any]:
    return {"type": "canceled"}


def good_answer(custom_id: str, params: dict[str, Any], attempt: int) -> dict:
    """Valid queries for every request: ``"<title> <query type>"``."""
    enum = params["tools"][0]["input_schema"]["properties"]["queries"]["items"]
    types = enum["properties"]["query_type"]["enum"]
    return succeeded({"queries": queries_for(title_of(params), types)})


@dataclass
class FakeBatch:
    id: str
    requests: list[dict[str, Any]]
    results: list[dict[str, Any]]
    polls_left: int
    not_found_left: int
    ended: bool = False


@dataclass
class FakeBatchesAPI:
    """The server; use it as a context manager. Requests without ``api_key``
    get a 401. ``polls_before_end``: the
    retrieves that answer ``in_progress`` before a batch ends;
    ``not_found_after_create``: the retrieves right after create that answer
    404; while ``hold`` is set, no batch ends."""

    answer: Answer = good_answer
    api_key: str = "test-key"
    polls_before_end: int = 0
    not_found_after_create: int = 0
    seed: int = 0
    hold: threading.Event = field(default_factory=threading.Event)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    served: dict[str, list[str]] = field(default_factory=dict)
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    submissions: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> FakeBatchesAPI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: no delayed-ACK stall.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                fake.handle(self, "POST")

            def do_GET(self) -> None:
                fake.handle(self, "GET")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def creates(self) -> list[FakeBatch]:
        """The batches created, in order."""
        return list(self.batches.values())

    def calls(self, method: str | None = None, suffix: str = "") -> int:
        """Requests seen (of a method, to a path ending with ``suffix``);
        ``served`` holds the order in which each batch's results were sent."""
        return sum(
            1
            for m, path, _ in self.log
            if (method is None or m == method) and path.endswith(suffix)
        )

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?")[0]
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        key = handler.headers.get("x-api-key") or handler.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        with self.lock:
            if key == self.api_key:
                status, payload, jsonl = self._route(method, path, body)
            else:
                status, payload, jsonl = _error(
                    401, "authentication_error", "invalid x-api-key"
                )
            self.log.append((method, path, status))
        if jsonl is not None:
            content, content_type = jsonl.encode(), "application/binary"
        else:
            content, content_type = json.dumps(payload).encode(), "application/json"
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(content)))
        handler.send_header("request-id", "req_fake")
        handler.end_headers()
        handler.wfile.write(content)

    def _route(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, Any] | None, str | None]:
        if method == "POST" and path == "/v1/messages/batches":
            return self._create(json.loads(body))
        match = BATCH_PATH.fullmatch(path)
        batch = self.batches.get(match["id"]) if match and method == "GET" else None
        if batch is None:
            return _error(404, "not_found_error", f"no {method} {path}")
        if match["results"]:
            if not batch.ended:
                return _error(400, "invalid_request_error", "batch not ended")
            lines = [*batch.results]
            random.Random(self.seed).shuffle(lines)
            self.served[batch.id] = [line["custom_id"] for line in lines]
            return 200, None, "".join(json.dumps(line) + "\n" for line in lines)
        if batch.not_found_left > 0:
            batch.not_found_left -= 1
            return _error(404, "not_found_error", f"batch {batch.id} not found")
        if not batch.ended and not self.hold.is_set():
            if batch.polls_left > 0:
                batch.polls_left -= 1
            else:
                batch.ended = True
        return 200, self._batch_json(batch), None

    def _create(
        self, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any] | None, str | None]:
        requests = body["requests"]
        ids = [r["custom_id"] for r in requests]
        bad = [i for i in ids if not CUSTOM_ID.fullmatch(i)]
        if bad or len(set(ids)) != len(ids) or not requests:
            return _error(400, "invalid_request_error", f"bad custom_id(s) {bad}")
        results = []
        for request in requests:
            custom_id = request["custom_id"]
            self.submissions[custom_id] = self.submissions.get(custom_id, 0) + 1
            result = self.answer(
                custom_id, request["params"], self.submissions[custom_id]
            )
            results.append({"custom_id": custom_id, "result": result})
        batch = FakeBatch(
            id=f"msgbatch_fake{len(self.batches) + 1:04d}",
            requests=requests,
            results=results,
            polls_left=self.polls_before_end,
            not_found_left=self.not_found_after_create,
        )
        self.batches[batch.id] = batch
        return 200, self._batch_json(batch), None

    def _batch_json(self, batch: FakeBatch) -> dict[str, Any]:
        counts = dict.fromkeys(
            ("processing", "succeeded", "errored", "canceled", "expired"), 0
        )
        if batch.ended:
            for line in batch.results:
                counts[line["result"]["type"]] += 1
        else:
            counts["processing"] = len(batch.requests)
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if batch.ended else "in_progress",
            "request_counts": counts,
            "created_at": TIMESTAMP,
            "expires_at": TIMESTAMP,
            "ended_at": TIMESTAMP if batch.ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": (
                f"{self.url}/v1/messages/batches/{batch.id}/results"
                if batch.ended
                else None
            ),
        }


def _error(
    status: int, error_type: str, message: str
) -> tuple[int, dict[str, Any], None]:
    return (
        status,
        {"type": "error", "error": {"type": error_type, "message": message}},
        None,
    )
