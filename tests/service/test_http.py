"""HTTP/1.1 as clients send it, over a raw socket to a real uvicorn serving the
service the way ``python -m product_search.service`` does (the command itself,
with one worker and with two, is held to the same in test_startup.py).

Java's ``java.net.http.HttpClient`` offers HTTP/2 on its ``http://`` requests
(``Upgrade: h2c``); uvicorn's own httptools protocol then served them with an
empty body, a 422 (uvicorn issue #2722). The service must answer such a
request as plain HTTP/1.1, body included, and keep the connection open.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import uvicorn
from fastapi import FastAPI

from product_search.service.deps import Served
from product_search.service.server import uvicorn_options
from product_search.service.settings import ServiceSettings
from tests.service.conftest import LIMITS, serving

# What Java 17's HttpClient adds to a request on a new http:// connection.
H2C_OFFER = (
    b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)
# One text list per request, so that each answer shows which body was read.
TEXTS = [["cast iron pan"], ["running shoes for trail", "dog toy"], ["drill"]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_response(stream) -> tuple[int, bytes]:
    """The status and body of the next response on the connection."""
    status = int(stream.readline().split()[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, stream.read(length)


def chunked(body: bytes) -> bytes:
    """``body`` in two chunks, then the last, empty one."""
    parts = (body[: len(body) // 2], body[len(body) // 2 :])
    last = b"0\r\n\r\n"
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + last


def embed_on_one_connection(port: int) -> list[tuple[int, bytes]]:
    """Three ``POST /embed`` on one keep-alive connection: offering h2c with a
    Content-Length body (head and body written apart, as Java does), offering
    h2c with a chunked body, then a plain request."""
    bodies = [json.dumps({"texts": texts}).encode() for texts in TEXTS]
    head = b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += b"Content-Type: application/json\r\n"
    writes = [
        [head + H2C_OFFER + b"Content-Length: %d\r\n\r\n" % len(bodies[0]), bodies[0]],
        [head + H2C_OFFER + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(bodies[1])],
        [head + b"Content-Length: %d\r\n\r\n" % len(bodies[2]) + bodies[2]],
    ]
    responses = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = sock.makefile("rb")
        for request in writes:
            for data in request:
                sock.sendall(data)
            responses.append(read_response(stream))
    return responses


def assert_embeddings_of_texts(responses: list[tuple[int, bytes]], model) -> None:
    assert [status for status, _ in responses] == [200, 200, 200], responses
    for (_, body), texts in zip(responses, TEXTS, strict=True):
        np.testing.assert_allclose(
            json.loads(body)["embeddings"],
            model.encode(texts, normalize_embeddings=True),
            atol=1e-5,
        )


@contextmanager
def uvicorn_serving(app: FastAPI, settings: ServiceSettings) -> Iterator[None]:
    """uvicorn with the service's options, serving ``app`` from a thread."""
    config = uvicorn.Config(app, log_config=None, **uvicorn_options(settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            thread.join(timeout=0.05)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def test_an_h2c_upgrade_offer_is_answered_as_plain_http_on_the_same_connection(
    encoder, make_table, base_model
):
    settings = ServiceSettings(**LIMITS, port=free_port())
    # /embed reads no table: one never saved will do.
    app = serving(Served(encoder, make_table()), settings)

    with uvicorn_serving(app, settings):
        responses = embed_on_one_connection(settings.port)

    assert_embeddings_of_texts(responses, base_model)
