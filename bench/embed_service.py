"""The /embed service under load: torch against ONNX Runtime, each without
and with micro-batching, then a soak with malformed requests.

For each configuration, starts ``python -m product_search.service`` (uvicorn,
127.0.0.1, the project's configuration and served model) in a subprocess with
the same number of threads for either backend, and sends real shopper queries
from the Home Depot search log, one per request, from 1, 8, 32 and 64
concurrent keep-alive connections (a closed loop: each client sends its next
request when the last one is answered) for ``--seconds`` per level. "Without
micro-batching" is ``SEARCH_MAX_BATCH_TEXTS=1``: one text per encode call.

Then a soak: ``--soak-seconds`` at 32 clients against the default
configuration (ONNX, micro-batching) with 5% malformed requests (bad JSON, an
empty list, a blank text, too many texts); every malformed request must get its
422, every other one its 200, and the service's memory must stay flat.

The load generator is a small asyncio HTTP/1.1 client rather than httpx, whose
own cost per request (~0.5 ms of CPU) would take a core from the service it
measures on a 2-core machine.

    .venv/bin/python bench/embed_service.py [--seconds 10] [--soak-seconds 60]
        [--threads 2] [--env ENV]

Writes bench/results/embed_service.{json,md}. If the deployment has not
exported the served model to ONNX yet, the benchmark exports it first (as
the deployment pipeline does).

With ``--http`` it compares HTTP/1.1 stacks instead, each a value of uvicorn's
``--http`` (``httptools``, ``h11`` or a protocol class's import string):

    .venv/bin/python bench/embed_service.py --http httptools \
        product_search.service.server:UpgradeIgnoringHttpToolsProtocol h11

For each of ``--rounds`` rounds, each stack in turn serves the soak's
configuration (ONNX int8, 2 workers, micro-batching) through
``uvicorn --factory product_search.service.main:create_app --http STACK``,
with the same load as above and no soak. Writes
bench/results/embed_service_http.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from common import environment, provenance

from product_search.datasets import model_id
from product_search.onnx_export import export_onnx
from product_search.service.project import project_catalog, served_model_and_table

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "bench" / "results"
QUERIES = (
    PROJECT.parent / "shared" / "data" / "home-depot-search-relevance" / "train.csv"
)
# Two threads in all for every configuration: one worker of 2 threads, or
# 2 workers of 1 thread.
CONFIGURATIONS = [
    {"backend": "torch", "batching": False},
    {"backend": "torch", "batching": True},
    {"backend": "onnx", "batching": False},
    {"backend": "onnx", "batching": True},
    {"backend": "onnx", "variant": "int8", "batching": True},
    {"backend": "onnx", "variant": "int8", "batching": True, "workers": 2},
]
SOAK = CONFIGURATIONS[-1]
# The app that uvicorn's command serves when --http compares HTTP stacks.
APP = "product_search.service.main:create_app"
# What Java 17's HttpClient adds to a request on a new http:// connection.
H2C = (
    "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)
# Bodies that must each get a 422 (the service's limits are its defaults).
MALFORMED = [
    b'{"texts": ["unterminated',
    b'{"texts": []}',
    b'{"texts": ["   "]}',
    json.dumps({"texts": ["drill"] * 65}).encode(),
    b'{"text": "wrong field"}',
]

logger = logging.getLogger("bench.embed_service")


def shopper_queries(n: int, seed: int) -> list[str]:
    if not QUERIES.exists():
        raise SystemExit(f"{QUERIES} is missing: the benchmark uses its real queries.")
    terms = pd.read_csv(QUERIES, encoding="latin-1", usecols=["search_term"])
    distinct = terms["search_term"].drop_duplicates()
    return distinct.sample(n=n, random_state=seed).tolist()


def ensure_onnx_export(env: str | None) -> str:
    """The served model's id; exports it to ONNX, fp32 and int8, when the
    catalog's export is missing, of another model, or without int8."""
    catalog = project_catalog(PROJECT, env)
    model, _, _ = served_model_and_table(catalog)
    served = model_id(model)
    export = catalog.load("onnx_model") if catalog.exists("onnx_model") else None
    if export is None or export.model_id != served or "int8" not in export.graphs:
        logger.info("Exporting %s to ONNX, fp32 and int8.", served)
        catalog.save("onnx_model", export_onnx(model, served, int8=True))
    return served


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request_bytes(path: str, body: bytes, headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def h2c_status(port: int) -> int:
    """The status of a ``POST /embed`` offering h2c, as Java's HttpClient
    sends it (uvicorn's httptools protocol answers 422: no body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"texts": ["cordless drill"]}).encode()
    status, _ = await exchange(reader, writer, request_bytes("/embed", body, H2C))
    writer.close()
    return status


async def get(port: int, path: str) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    status, body = await exchange(reader, writer, request)
    writer.close()
    return status, json.loads(body)


def start_service(
    port: int, env: str | None, settings: dict[str, str], http: str | None = None
):
    """``python -m product_search.service``, or with ``http`` uvicorn's own
    command serving the service's app with that HTTP stack."""
    if http is None:
        command = [sys.executable, "-m", "product_search.service"]
        command += ["--env", env] if env else []
    else:
        command = [sys.executable, "-m", "uvicorn", "--factory", APP, "--http", http]
        command += ["--workers", settings.get("workers", "1")]
    command += ["--port", str(port)]
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "TOKENIZERS_PARALLELISM": "false",
        **({"SEARCH_ENV": env} if env else {}),
        **{f"SEARCH_{name.upper()}": value for name, value in settings.items()},
    }
    path = RESULTS / "embed_service.server.log"
    log = path.open("a")
    start = path.stat().st_size
    process = subprocess.Popen(
        command, cwd=PROJECT, env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    workers = int(settings.get("workers", 1))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"The service exited; see {path}.")
        # Every worker, not only the first, must be up before the load starts.
        started = path.read_text(errors="replace")[start:]
        if started.count("Application startup complete") >= workers:
            with contextlib.suppress(OSError):
                _, health = asyncio.run(get(port, "/health"))
                return process, health
        time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"The service did not answer within 180 s; see {path}.")


def stop(process: subprocess.Popen) -> None:
    process.terminate()  # SIGTERM: uvicorn shuts down, the lifespan releases
    process.wait(timeout=60)


def latency_summary(latencies: list[float], elapsed: float) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


async def load(
    port: int,
    queries: list[str],
    concurrency: int,
    seconds: float,
    *,
    malformed_share: float = 0.0,
    seed: int = 0,
) -> dict:
    """``concurrency`` keep-alive clients for ``seconds`` (after a short
    warm-up); every status counted, a malformed request's apart."""
    rng = random.Random(seed)
    latencies: list[float] = []
    statuses: Counter = Counter()
    malformed_statuses: Counter = Counter()
    good = [
        request_bytes("/embed", json.dumps({"texts": [q]}).encode()) for q in queries
    ]
    bad = [request_bytes("/embed", body) for body in MALFORMED]
    warm_up_until = time.perf_counter() + 1.0
    deadline = warm_up_until + seconds

    async def client(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while (now := time.perf_counter()) < deadline:
            is_bad = rng.random() < malformed_share
            request = rng.choice(bad) if is_bad else good[i % len(good)]
            i += 1
            status, _ = await exchange(reader, writer, request)
            if now < warm_up_until:
                continue
            (malformed_statuses if is_bad else statuses)[status] += 1
            if not is_bad:
                latencies.append(time.perf_counter() - now)
        writer.close()

    await asyncio.gather(*(client(n * 7919) for n in range(concurrency)))
    return {
        "concurrency": concurrency,
        **latency_summary(latencies, seconds),
        "statuses": dict(statuses),
        "malformed_statuses": dict(malformed_statuses),
    }


def service_settings(configuration: dict, threads: int) -> dict[str, str]:
    workers = configuration.get("workers", 1)
    return {
        "backend": configuration["backend"],
        "onnx_variant": configuration.get("variant", "fp32"),
        "workers": str(workers),
        "threads": str(max(1, threads // workers)),
        "max_batch_texts": "64" if configuration["batching"] else "1",
    }


def run_configuration(
    configuration: dict,
    queries: list[str],
    args: argparse.Namespace,
    http: str | None = None,
) -> dict:
    settings = service_settings(configuration, args.threads)
    port = free_port()
    process, health = start_service(port, args.env, settings, http)
    service = psutil.Process(process.pid)
    try:
        h2c = asyncio.run(h2c_status(port))
        levels = []
        for concurrency in args.concurrency:
            before, started = cpu_seconds(service), time.perf_counter()
            level = asyncio.run(load(port, queries, concurrency, args.seconds))
            elapsed = time.perf_counter() - started
            # Other work on the machine meanwhile, in cores: it skews the figures.
            level["other_cpu"] = {
                name: round((cpu_seconds(service)[name] - before[name]) / elapsed, 2)
                for name in before
            }
            levels.append(level)
            logger.info("%s %s %s", http or "", configuration, level)
    finally:
        stop(process)
    return {
        **configuration,
        **({"http": http} if http else {}),
        "h2c_status": h2c,
        "settings": settings,
        "health": health,
        "levels": levels,
    }


def cpu_seconds(service: psutil.Process) -> dict[str, float]:
    """CPU seconds so far that neither this benchmark nor ``service`` (all its
    processes) used: other processes', and those the hypervisor gave to other
    machines (steal)."""
    machine = psutil.cpu_times()
    busy = machine.user + machine.nice + machine.system + machine.irq + machine.softirq
    ours = 0.0
    for process in [psutil.Process(), service, *service.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            ours += times.user + times.system
    return {"processes": busy - ours, "steal": machine.steal}


def soak(queries: list[str], args: argparse.Namespace) -> dict:
    settings = service_settings(SOAK, args.threads)
    port = free_port()
    process, _ = start_service(port, args.env, settings)
    server = psutil.Process(process.pid)
    memory: list[float] = []

    async def sample_memory(stop_at: float) -> None:
        while time.perf_counter() < stop_at:
            # The supervisor and its workers together.
            tree = [server, *server.children(recursive=True)]
            memory.append(sum(p.memory_info().rss for p in tree) / 2**20)
            await asyncio.sleep(1)

    async def both() -> dict:
        stop_at = time.perf_counter() + args.soak_seconds + 1
        sampler = asyncio.create_task(sample_memory(stop_at))
        result = await load(
            port, queries, 32, args.soak_seconds, malformed_share=0.05, seed=1
        )
        await sampler
        return result

    try:
        result = asyncio.run(both())
    finally:
        stop(process)
    quarter = max(1, len(memory) // 4)
    return {
        **result,
        "settings": settings,
        "rss_mb": {
            "first_quarter_mean": round(float(np.mean(memory[:quarter])), 1),
            "last_quarter_mean": round(float(np.mean(memory[-quarter:])), 1),
            "max": round(max(memory), 1),
        },
    }


def label(configuration: dict) -> str:
    backend = configuration["backend"]
    if backend == "onnx":
        backend += f" {configuration.get('variant', 'fp32')}"
    return f"{backend}, {configuration.get('workers', 1)} worker(s)"


def markdown(results: dict) -> str:
    lines = [
        "# /embed under load: torch and ONNX Runtime, without and with micro-batching",
        "",
        f"Model `{results['model']}`; {results['queries']} distinct Home Depot "
        f"search terms, one per request; {results['threads']} threads in all for "
        "every configuration (one worker with 2, or 2 workers with 1 each); "
        f"{results['seconds']} s per level after 1 s of warm-up; the service and "
        "the load generator share the machine "
        f"({results['environment']['cpu_count']} CPU cores).",
        "",
        "| backend | micro-batching | clients | requests/s | p50 ms | p95 ms "
        "| p99 ms | non-200 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        for level in run["levels"]:
            errors = sum(n for s, n in level["statuses"].items() if int(s) != 200)
            lines.append(
                f"| {label(run)} | {'on' if run['batching'] else 'off'} | "
                f"{level['concurrency']} | {level['per_s']} | {level['p50_ms']} | "
                f"{level['p95_ms']} | {level['p99_ms']} | {errors} |"
            )
    soak_run = results["soak"]
    rss = soak_run["rss_mb"]
    lines += [
        "",
        f"Soak: {results['soak_seconds']} s at 32 clients, {label(SOAK)} with "
        f"micro-batching, 5% malformed requests: {soak_run['requests']:,} good "
        f"requests ({soak_run['per_s']}/s, p99 {soak_run['p99_ms']} ms) answered "
        f"{soak_run['statuses']}; malformed ones answered "
        f"{soak_run['malformed_statuses']}. Service memory (RSS of all its "
        f"processes): {rss['first_quarter_mean']} MB in the first quarter, "
        f"{rss['last_quarter_mean']} MB in the last, {rss['max']} MB at most.",
        "",
        provenance(results),
        "",
    ]
    return "\n".join(lines)


def stack_label(http: str) -> str:
    """``httptools``, ``h11``, or a protocol class's name."""
    return http.rpartition(":")[2]


def markdown_http(results: dict) -> str:
    """The stacks' figures, each the median over the rounds (a round that
    other work on the machine slowed moves it least)."""
    rounds = results["rounds"]
    lines = [
        "# /embed under load: HTTP/1.1 stacks",
        "",
        f"Model `{results['model']}`; {label(SOAK)} with micro-batching, "
        f"{results['threads']} threads in all; each stack served by `uvicorn "
        f"--factory {APP} --http STACK --workers 2`; {rounds} round(s), the "
        f"stacks in turn within each; {results['queries']} distinct Home Depot "
        f"search terms, one per request; {results['seconds']} s per level after "
        "1 s of warm-up; the service and the load generator share the machine "
        f"({results['environment']['cpu_count']} CPU cores). Figures are medians "
        "over the rounds (requests/s: lowest to highest in brackets). h2c: the "
        "status of a `POST /embed` offering `Upgrade: h2c`, as Java's HttpClient "
        "sends it. Other CPU: the most cores that other processes used, and "
        "the hypervisor stole, during a round's level.",
        "",
        "| stack | h2c | clients | requests/s | p50 ms | p95 ms | p99 ms "
        "| non-200 | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for http in results["http"]:
        runs = [run for run in results["runs"] if run["http"] == http]
        h2c = "/".join(sorted({str(run["h2c_status"]) for run in runs}))
        for i, concurrency in enumerate(results["concurrency"]):
            levels = [run["levels"][i] for run in runs]

            def median(key: str, levels=levels) -> float:
                return round(float(np.median([level[key] for level in levels])), 1)

            per_s = [level["per_s"] for level in levels]
            errors = sum(
                n for level in levels for s, n in level["statuses"].items()
                if int(s) != 200
            )  # fmt: skip
            other = max(0, *(level["other_cpu"]["processes"] for level in levels))
            steal = max(0, *(level["other_cpu"]["steal"] for level in levels))
            lines.append(
                f"| {stack_label(http)} | {h2c} | {concurrency} | {median('per_s')} "
                f"({min(per_s)} to {max(per_s)}) | {median('p50_ms')} | "
                f"{median('p95_ms')} | {median('p99_ms')} | {errors} | "
                f"{other:.2f} + {steal:.2f} steal |"
            )
    lines += ["", provenance(results), ""]
    return "\n".join(lines)


def compare_http(queries: list[str], served: str, args: argparse.Namespace) -> None:
    """Each stack in turn, ``args.rounds`` times; writes embed_service_http."""
    runs = [
        {"round": round_, **run_configuration(SOAK, queries, args, http)}
        for round_ in range(1, args.rounds + 1)
        for http in args.http
    ]
    results = {
        "model": served,
        "queries": len(queries),
        "threads": args.threads,
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "http": args.http,
        "rounds": args.rounds,
        "runs": runs,
        "environment": environment("cpu"),
    }
    (RESULTS / "embed_service_http.json").write_text(
        json.dumps(results, indent=2) + "\n"
    )
    (RESULTS / "embed_service_http.md").write_text(markdown_http(results))
    logger.info("Wrote %s", RESULTS / "embed_service_http.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=10, help="per level")
    parser.add_argument("--soak-seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=2, help="for either backend")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--env", help="Kedro environment of the service")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--http", nargs="+", metavar="STACK",
        help="compare these uvicorn --http stacks instead (see above)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="with --http")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # The catalog's paths are relative to the project root.
    os.chdir(PROJECT)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embed_service.server.log").unlink(missing_ok=True)

    queries = shopper_queries(args.queries, args.seed)
    served = ensure_onnx_export(args.env)
    if args.http:
        compare_http(queries, served, args)
        return
    runs = [run_configuration(c, queries, args) for c in CONFIGURATIONS]
    soak_run = soak(queries, args)
    logger.info("Soak: %s", soak_run)
    results = {
        "model": served,
        "queries": len(queries),
        "threads": args.threads,
        "seconds": args.seconds,
        "soak_seconds": args.soak_seconds,
        "runs": runs,
        "soak": soak_run,
    }
    results["environment"] = environment("cpu")
    (RESULTS / "embed_service.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "embed_service.md").write_text(markdown(results))
    logger.info("Wrote %s", RESULTS / "embed_service.md")


if __name__ == "__main__":
    main()
