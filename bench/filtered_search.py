"""Filtered search on Home Depot's 17,936 products: latency of each mode and
the dense lane's recall against exact filtered search, at several
selectivities, through the table's search function (the code of /search).

The export has no categories or prices, so each product gets a synthetic
category drawn with a fixed seed (independent of its text, the hard case for
a filtered vector index: a filter's products lie anywhere in the graph):
"s50" holds 50% of the catalog, "s10" 10%, "s05" 5%, "s02" 2%, "s01" 1%.

Each filtered query runs both ways the dense lane can go:
- exact: the products the filter keeps, each scored (``filter_exact_rows``
  a billion: always);
- hnsw: the HNSW graph walked with pgvector's iterative scan until enough
  products pass the filter (``filter_exact_rows`` 0: never exact; PostgreSQL
  may still prefer the category's B-tree and a sort for a small filter);
and the shipped default (``SearchOptions().filter_exact_rows``) picks one by
how many products the filter keeps. Recall@10 of the dense lane (dense mode,
k = 10) is against the exact top 10 of the filtered products by numpy.
Latencies exclude the query's embedding (about 3 ms with int8 ONNX).

    .venv/bin/python bench/filtered_search.py [--queries 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    ROOT,
    environment,
    load_params,
    provenance,
    scratch_database,
    setup,
    write_results,
)
from home_depot import build_table, export

from product_search.pipelines.data_generation.products import prepare_products
from product_search.search.index import unit_vectors
from product_search.search.table import SearchOptions, SearchTable

NAME = "filtered_search"
SEED = 42
K = 10
SHARES = {"s50": 0.50, "s10": 0.10, "s05": 0.05, "s02": 0.02, "s01": 0.01}
MODES = ("dense", "lexical", "hybrid")
WAYS = {"exact": 10**9, "hnsw": 0, "default": SearchOptions().filter_exact_rows}


def synthetic_categories(n: int) -> list[str]:
    """One category per product, drawn with the seed: SHARES of the catalog,
    the rest in "other"."""
    draws = np.random.default_rng(SEED).random(n)
    bounds = np.cumsum(list(SHARES.values()))
    names = [*SHARES, "other"]
    return [names[int(np.searchsorted(bounds, u, side="right"))] for u in draws]


def timed(table, queries, vectors, *, mode, options, filters) -> tuple[dict, list]:
    """p50/p95 in ms over the queries (after one untimed pass) and the hits."""
    for query, vector in zip(queries, vectors, strict=True):
        table.search(query, vector, K, mode=mode, options=options, filters=filters)
    times, found = [], []
    for query, vector in zip(queries, vectors, strict=True):
        started = time.perf_counter()
        hits = table.search(
            query, vector, K, mode=mode, options=options, filters=filters
        )
        times.append(1000 * (time.perf_counter() - started))
        found.append(hits)
    q = statistics.quantiles(times, n=100)
    return {"p50_ms": q[49], "p95_ms": q[94]}, found


def exact_top(product_vectors, keep, vectors) -> list[set[int]]:
    """The exact filtered top K of each query (rows of the products)."""
    rows = np.flatnonzero(keep)
    scores = vectors @ product_vectors[rows].T
    return [set(rows[np.argsort(-s, kind="stable")[:K]]) for s in scores]


def markdown(payload: dict) -> str:
    lines = [
        "# Filtered search: latency and the dense lane's recall by selectivity",
        "",
        f"{payload['products']:,} Home Depot products, {payload['queries']} real "
        f"queries, k = {K}, base model vectors (HNSW m 16, ef_construction 64, "
        "ef_search 100), synthetic categories drawn with a fixed seed; the query "
        "embedding is not timed. exact: the filter's products scored exactly; "
        "hnsw: HNSW with pgvector's iterative scan; default: "
        f"filter_exact_rows = {WAYS['default']} (exact up to that many products).",
        "",
        "| filter keeps | way | dense p50 / p95 ms | dense recall@10 | fewest dense hits "
        "| lexical p50 / p95 ms | hybrid p50 / p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in payload["rows"]:
        share = (
            "all (no filter)"
            if row["share"] is None
            else f"{row['share']:.0%} ({row['matching_products']:,})"
        )
        lat = row["latency"]
        lines.append(
            f"| {share} | {row['way']} | {lat['dense']['p50_ms']:.1f} / "
            f"{lat['dense']['p95_ms']:.1f} | {row['recall_at_10']:.4f} | "
            f"{row['fewest_dense_hits']} | {lat['lexical']['p50_ms']:.1f} / "
            f"{lat['lexical']['p95_ms']:.1f} | {lat['hybrid']['p50_ms']:.1f} / "
            f"{lat['hybrid']['p95_ms']:.1f} |"
        )
    lines += ["", provenance(payload), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    device, base = setup("cpu")
    params = load_params("data_generation") | {"provider": "offline"}
    with tempfile.TemporaryDirectory(prefix="filtered-") as tmp:
        data = export(Path(tmp) / "export")
        url = scratch_database(Path(tmp))
        products, _ = prepare_products(data["products"], params)
        products = products.reset_index(drop=True)
        products["category"] = synthetic_categories(len(products))
        products["price"] = np.round(
            np.random.default_rng(SEED + 1).lognormal(3.5, 1.0, len(products)), 2
        )
        started = time.perf_counter()
        table: SearchTable = build_table(url, "hd_filtered", products, base)
        build_seconds = time.perf_counter() - started
        frame = table.frame(["product_id", "embedding"])
        order = {pid: i for i, pid in enumerate(products["product_id"])}
        product_vectors = np.zeros((len(products), 384), dtype=np.float32)
        for pid, vector in zip(frame["product_id"], frame["embedding"], strict=True):
            product_vectors[order[pid]] = vector
        queries = (
            data["queries"].sample(n=args.queries, random_state=SEED)["query"].tolist()
        )
        vectors = unit_vectors(base, queries, 64)
        categories = products["category"].to_numpy()
        rows = []
        for category in [None, *SHARES]:
            keep = (
                np.ones(len(products), bool)
                if category is None
                else categories == category
            )
            truth = exact_top(product_vectors, keep, vectors)
            filters = None if category is None else {"category": [category]}
            for way, exact_rows in WAYS.items() if category else [("hnsw", 0)]:
                options = SearchOptions(filter_exact_rows=exact_rows)
                latency, recall, fewest = {}, None, None
                for mode in MODES:
                    latency[mode], found = timed(
                        table, queries, vectors,
                        mode=mode, options=options, filters=filters,
                    )  # fmt: skip
                    if mode == "dense":
                        recall = float(
                            np.mean(
                                [
                                    len({order[h.product_id] for h in hits} & t) / K
                                    for hits, t in zip(found, truth, strict=True)
                                ]
                            )
                        )
                        fewest = min(len(hits) for hits in found)
                row = {
                    "category": category,
                    "share": None if category is None else float(keep.mean()),
                    "way": way,
                    "filter_exact_rows": exact_rows,
                    "matching_products": int(keep.sum()),
                    "latency": latency,
                    "recall_at_10": recall,
                    "fewest_dense_hits": fewest,
                }
                rows.append(row)
                print(
                    f"{category or 'all'} {way}: dense p95 "
                    f"{latency['dense']['p95_ms']:.1f} ms recall {recall:.4f}, "
                    f"hybrid p95 {latency['hybrid']['p95_ms']:.1f} ms"
                )
        table.engine.dispose()
    payload = {
        "environment": environment(device),
        "products": len(products),
        "queries": len(queries),
        "k": K,
        "build_seconds": build_seconds,
        "default_filter_exact_rows": WAYS["default"],
        "rows": rows,
    }
    write_results(ROOT / "bench" / "results", NAME, payload, markdown(payload))


if __name__ == "__main__":
    main()
