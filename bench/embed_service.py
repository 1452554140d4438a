"""The /embed endpoint under load, against in-process ``model.encode``.

Starts ``python -m product_search.service`` (uvicorn, 127.0.0.1, the project's
configuration and model) in a subprocess, sends real shopper queries from the
Home Depot search log one per request with 1, 8 and 32 concurrent clients
(a bounded number of requests and seconds per level), and encodes the same
queries in this process with the same model, before and after the HTTP runs,
one call per query and in batches of 32.

    .venv/bin/python bench/embed_service.py [--requests 300] [--torch-threads 1]

Each --torch-threads setting is one run in bench/results/embed_service.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import torch

from product_search.datasets import model_id
from product_search.service.project import project_catalog, served_model_and_table

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
QUERIES = (
    PROJECT.parent / "shared" / "data" / "home-depot-search-relevance" / "train.csv"
)

logger = logging.getLogger("bench.embed_service")


def shopper_queries(n: int, seed: int) -> list[str]:
    if not QUERIES.exists():
        raise SystemExit(f"{QUERIES} is missing: the benchmark uses its real queries.")
    terms = pd.read_csv(QUERIES, encoding="latin-1", usecols=["search_term"])
    distinct = terms["search_term"].drop_duplicates()
    return distinct.sample(n=n, random_state=seed).tolist()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(
    port: int, env: str | None, torch_threads: int | None
) -> subprocess.Popen:
    command = [sys.executable, "-m", "product_search.service", "--port", str(port)]
    if env:
        command += ["--env", env]
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "SEARCH_HOST": "127.0.0.1",
    }
    if torch_threads is not None:
        environment["SEARCH_TORCH_THREADS"] = str(torch_threads)
    log = (RESULTS / "embed_service.server.log").open("w")
    process = subprocess.Popen(
        command, cwd=PROJECT, env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"The service exited; see {log.name}.")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            return process
        except httpx.TransportError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"The service did not answer within 180 s; see {log.name}.")


def summary(latencies: list[float], elapsed: float) -> dict:
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "p95_ms": round(float(np.percentile(latencies, 95)) * 1000, 1),
    }


async def load_level(
    url: str, queries: list[str], concurrency: int, requests: int, seconds: float
) -> dict:
    """``concurrency`` clients, each sending one query per request, until
    ``requests`` are done or ``seconds`` have passed."""
    latencies: list[float] = []
    next_query = iter(range(requests))
    deadline = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        for i in next_query:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            response = await http.post(
                f"{url}/embed", json={"texts": [queries[i % len(queries)]]}
            )
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        # One warm-up request, not counted.
        (
            await http.post(f"{url}/embed", json={"texts": ["warm up"]})
        ).raise_for_status()
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, **summary(latencies, elapsed)}


def in_process(model, queries: list[str]) -> dict:
    model.encode(["warm up"], normalize_embeddings=True)
    latencies = []
    started = time.perf_counter()
    for query in queries:
        one = time.perf_counter()
        model.encode([query], normalize_embeddings=True, show_progress_bar=False)
        latencies.append(time.perf_counter() - one)
    single = summary(latencies, time.perf_counter() - started)
    started = time.perf_counter()
    model.encode(
        queries, batch_size=32, normalize_embeddings=True, show_progress_bar=False
    )
    batched = round(len(queries) / (time.perf_counter() - started), 1)
    return {"one_query_per_call": single, "batches_of_32_per_s": batched}


def markdown(results: dict) -> str:
    lines = [
        "# /embed service throughput and latency",
        "",
        f"Model `{results['model']}`; {results['queries']} distinct Home Depot "
        "search terms, one per request; the service and the load generator "
        f"share the machine: {results['machine']}.",
        "",
        "| torch threads | client | concurrency | requests | requests/s "
        "| p50 ms | p95 ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in sorted(results["runs"], key=lambda r: r["torch_threads"]):
        threads = run["torch_threads"]
        for level in run["service"]:
            lines.append(
                f"| {threads} | HTTP /embed | {level['concurrency']} | "
                f"{level['requests']} | {level['per_s']} | {level['p50_ms']} | "
                f"{level['p95_ms']} |"
            )
        for when, local in run["in_process"].items():
            single = local["one_query_per_call"]
            lines.append(
                f"| {threads} | in-process `model.encode([q])` ({when}) | 1 | "
                f"{single['requests']} | {single['per_s']} | {single['p50_ms']} | "
                f"{single['p95_ms']} |"
            )
        for when, local in run["in_process"].items():
            lines.append(
                f"| {threads} | in-process `model.encode(queries, batch_size=32)` "
                f"({when}) | - | {results['queries']} | "
                f"{local['batches_of_32_per_s']} | - | - |"
            )
    lines += [
        "",
        "The service encodes requests that wait while the model is busy in one "
        "`model.encode` call, so its throughput grows with concurrency. "
        "'before' and 'after' bracket the HTTP runs: when they differ, other "
        "work on the machine moved the figures. With 2 intra-op threads on 2 "
        "cores, any other CPU-bound process makes each op wait for a "
        "descheduled thread (single-query encodes went from ~6 ms to ~380 ms); "
        "1 thread (SEARCH_TORCH_THREADS=1) is immune to that.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300, help="per level")
    parser.add_argument("--seconds", type=float, default=60, help="per level")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--env", help="Kedro environment of the service")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="intra-op threads, for the service (SEARCH_TORCH_THREADS) and here",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    RESULTS.mkdir(exist_ok=True)

    queries = shopper_queries(args.queries, args.seed)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    model, _, _ = served_model_and_table(project_catalog(PROJECT, args.env))
    # Measured before and after the HTTP levels: on a shared machine the
    # spread between the two shows how much the background load moved.
    before = in_process(model, queries)
    logger.info("In process, before: %s", before)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logger.info("Starting the service on %s.", url)
    service = start_service(port, args.env, args.torch_threads)
    try:
        model_name = httpx.get(f"{url}/health", timeout=30).json()["model"]
        levels = []
        for concurrency in args.concurrency:
            levels.append(
                asyncio.run(
                    load_level(url, queries, concurrency, args.requests, args.seconds)
                )
            )
            logger.info("HTTP: %s", levels[-1])
    finally:
        service.send_signal(signal.SIGINT)
        service.wait(timeout=60)
    if model_id(model) != model_name:
        raise SystemExit(
            f"The service served {model_name}, this process has {model_id(model)}."
        )
    after = in_process(model, queries)
    logger.info("In process, after: %s", after)
    run = {
        "torch_threads": args.torch_threads or torch.get_num_threads(),
        "service": levels,
        "in_process": {"before": before, "after": after},
    }
    out = RESULTS / "embed_service.json"
    results = json.loads(out.read_text()) if out.exists() else {"runs": []}
    results.update(
        model=model_name,
        queries=len(queries),
        machine=f"{os.cpu_count()} CPU cores ({platform.machine()}), "
        "shared with other work",
    )
    results["runs"] = [
        r for r in results["runs"] if r["torch_threads"] != run["torch_threads"]
    ] + [run]
    out.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "embed_service.md").write_text(markdown(results))
    logger.info("Wrote %s", RESULTS / "embed_service.json")


if __name__ == "__main__":
    main()
