"""Bounded BM25: what capping each query term's candidates at
``lexical_bound`` (SearchOptions) costs in quality and saves in time.

On the Home Depot benchmark (shared/tools/export_home_depot.py: 1,000 real
queries with graded judgments, 17,936 products, titles only) it builds a
search table with random unit vectors (only the lexical lane is measured) and
the project's BM25 parameters, then runs every query through the lexical lane
(SearchTable.search, mode lexical, k = 10) exactly (bound 0) and with each
bound, query by query in turn so that a change of load hits every bound
alike, and reports graded NDCG@10, how many queries hold a term above the
bound (the queries the bound can change), the overlap of the top 10 with the
exact top 10, and p50/p95 latency.

With ``--synthetic N`` it does the same on N products whose titles recombine
halves of two Home Depot titles (seed 42), where no judgments exist: latency
and overlap with the exact lane only. bench/scale.py calls :func:`measure` on
its own tables.

Writes bench/results/bounded_bm25.{json,md}.

    .venv/bin/python bench/bounded_bm25.py [--limit N] [--bounds 0,100,...]
        [--synthetic N] [--synthetic-queries N] [--data DIR]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import environment, load_params, parse_args, provenance, scratch_database
from common import write_results as write
from home_depot import export

from product_search import metrics as m
from product_search.datasets import PgVectorTableDataset
from product_search.pipelines.data_generation.products import prepare_products
from product_search.search.analyzer import analyze
from product_search.search.bm25 import Bm25Params
from product_search.search.index import build_product_index
from product_search.search.table import SearchOptions, SearchTable

NAME = "bounded_bm25"
SEED = 42
DIMENSION = 8
BOUNDS = (0, 100, 300, 1000, 3000, 10_000)


def lexical_table(url: str, name: str, products: pd.DataFrame) -> SearchTable:
    """A search table of ``products`` (``product_id``, ``title``, ``text``)
    with the project's BM25 and random unit vectors of DIMENSION."""
    rng = np.random.default_rng(SEED)
    vectors = rng.normal(size=(len(products), DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    frame = products[["product_id", "title"]].assign(embedding=list(vectors))
    index = build_product_index(
        frame, products["text"].tolist(), Bm25Params(**load_params("search")["bm25"])
    )
    dataset = PgVectorTableDataset(
        table_name=name, dimension=DIMENSION, credentials={"con": url}
    )
    dataset.save(index)
    return dataset.load()


def document_frequencies(table: SearchTable) -> dict[str, int]:
    """The table's vocabulary with each term's document frequency."""
    with table.engine.connect() as conn:
        driver = conn.connection.driver_connection
        rows = driver.execute(
            f"SELECT term, document_frequency FROM "
            f"{table.spec.qualified(table.spec.terms_table)}"
        ).fetchall()
    return dict(rows)


def measure(
    target: SearchTable | str,
    queries: dict[str, str],
    bounds: tuple[int, ...] = BOUNDS,
    *,
    table_name: str | None = None,
    dimension: int = DIMENSION,
    qrels: dict[str, dict[str, int]] | None = None,
    k: int = 10,
) -> dict[str, Any]:
    """The lexical lane of ``target`` (a SearchTable, or a database URL with
    ``table_name`` and ``dimension``) on ``queries``, exactly (bound 0 is
    always measured) and with each bound: per bound, p50/p95 latency in ms,
    the queries with a term held by more products than the bound, the mean
    overlap of the top ``k`` with the exact top ``k`` and, with ``qrels``,
    graded NDCG@k."""
    table = target
    if isinstance(target, str):
        table = PgVectorTableDataset(
            table_name=table_name, dimension=dimension, credentials={"con": target}
        ).load()
    bounds = (0, *sorted(b for b in set(bounds) if b))
    frequency = document_frequencies(table)
    largest = {
        q: max((frequency.get(t, 0) for t in analyze(text)), default=0)
        for q, text in queries.items()
    }
    runs: dict[int, dict[str, list[str]]] = {b: {} for b in bounds}
    seconds: dict[int, list[float]] = {b: [] for b in bounds}
    for query_id, text in queries.items():
        for bound in bounds:
            options = SearchOptions(lexical_bound=bound)
            started = time.perf_counter()
            hits = table.search(text, None, k, mode="lexical", options=options)
            seconds[bound].append(time.perf_counter() - started)
            runs[bound][query_id] = [hit.product_id for hit in hits]
    results = []
    for bound in bounds:
        ms = [1000 * s for s in seconds[bound]]
        # A query without a lexical match overlaps fully when both are empty.
        overlap = [
            len(set(runs[bound][q]) & set(runs[0][q])) / len(runs[0][q])
            if runs[0][q]
            else float(not runs[bound][q])
            for q in queries
        ]
        row: dict[str, Any] = {
            "bound": bound,
            "queries_over_bound": sum(d > bound for d in largest.values())
            if bound
            else 0,
            "identical_top_k": sum(runs[bound][q] == runs[0][q] for q in queries),
            "overlap_at_k": float(np.mean(overlap)),
            "p50_ms": statistics.median(ms),
            "p95_ms": float(np.percentile(ms, 95)),
        }
        if qrels:
            run = {q: m.ranked_run(ids) for q, ids in runs[bound].items()}
            per_query = m.graded_metrics(qrels, run, [f"ndcg@{k}"])[f"ndcg@{k}"]
            row[f"ndcg@{k}"] = float(np.mean(list(per_query.values())))
        results.append(row)
    return {
        "queries": len(queries),
        "k": k,
        "largest_document_frequency": {
            "p50": statistics.median(largest.values()),
            "max": max(largest.values(), default=0),
        },
        "bounds": results,
    }


def home_depot(data: dict[str, pd.DataFrame], limit: int | None):
    """Products (with ``text``), the judged queries and their graded qrels."""
    products, _ = prepare_products(data["products"], load_params("data_generation"))
    queries = dict(
        zip(data["queries"]["query_id"], data["queries"]["query"], strict=True)
    )
    if limit:
        queries = dict(sorted(queries.items())[:limit])
    qrels: dict[str, dict[str, int]] = {}
    for row in data["qrels"].itertuples(index=False):
        if row.query_id in queries:
            qrels.setdefault(row.query_id, {})[row.product_id] = int(row.relevance)
    judged = {q for q, docs in qrels.items() if max(docs.values()) > 0}
    return products, {q: t for q, t in queries.items() if q in judged}, qrels


def synthetic_products(titles: list[str], n: int) -> pd.DataFrame:
    """``n`` products, each the first half of one Home Depot title and the
    second half of another, drawn with SEED."""
    rng = np.random.default_rng(SEED)
    words = [t.split() for t in titles]
    first, second = rng.integers(len(words), size=(2, n))
    texts = [
        " ".join(words[a][: len(words[a]) // 2] + words[b][len(words[b]) // 2 :])
        for a, b in zip(first, second, strict=True)
    ]
    ids = [f"s{i:07d}" for i in range(n)]
    return pd.DataFrame({"product_id": ids, "title": texts, "text": texts})


def table_md(result: dict[str, Any]) -> str:
    has_ndcg = any("ndcg@10" in row for row in result["bounds"])
    head = "| bound | queries with a term over it | top 10 = exact | overlap@10 |"
    head += " NDCG@10 |" if has_ndcg else ""
    lines = [head + " p50 ms | p95 ms |", "|" + "---|" * (head.count("|") + 1)]
    for row in result["bounds"]:
        label = "exact (0)" if row["bound"] == 0 else f"{row['bound']:,}"
        cells = [
            label,
            str(row["queries_over_bound"]),
            f"{row['identical_top_k']} / {result['queries']}",
            f"{row['overlap_at_k']:.4f}",
            *([f"{row['ndcg@10']:.4f}"] if has_ndcg else []),
            f"{row['p50_ms']:.1f}",
            f"{row['p95_ms']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(payload: dict[str, Any]) -> str:
    parts = [
        "# Bounded BM25\n",
        provenance(payload),
        f"Load average at the start: {payload.get('load_average', 'n/a')} "
        "(2 cores shared with other work inflate the latencies).\n"
        "\nThe lexical lane (k = 10) exactly and with `lexical_bound` per query "
        "term. *queries with a term over it*: queries holding a term more "
        "products hold than the bound, the only ones the bound can change.\n",
    ]
    for key, title in (("home_depot", "Home Depot"), ("synthetic", "Synthetic")):
        if key in payload:
            result = payload[key]
            parts.append(
                f"\n## {title}: {result['products']:,} products, "
                f"{result['queries']} queries\n\n{table_md(result)}\n"
            )
    return "\n".join(parts)


def main() -> None:
    parser = parse_args(__doc__, "keep the first N queries")
    parser.add_argument("--bounds", default=",".join(map(str, BOUNDS)))
    parser.add_argument("--synthetic", type=int, default=0)
    parser.add_argument("--synthetic-queries", type=int, default=300)
    parser.add_argument("--data", type=Path, default=None, help="an export to reuse")
    args = parser.parse_args()
    bounds = tuple(int(b) for b in args.bounds.split(","))
    payload: dict[str, Any] = {
        "benchmark": NAME, "environment": environment("cpu"), "limit": args.limit,
        "load_average": round(os.getloadavg()[0], 1),
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bounded-bm25-") as tmp:
        folder = args.data or Path(tmp) / "export"
        if args.data and (folder / "products.csv").exists():
            read = {"dtype": str, "keep_default_na": False}
            data = {
                n: pd.read_csv(folder / f"{n}.csv", **read)
                for n in ("products", "queries", "qrels")
            }
        else:
            data = export(folder)
        url = scratch_database(Path(tmp))
        products, queries, qrels = home_depot(data, args.limit)
        table = lexical_table(url, "home_depot_lexical", products)
        result = measure(table, queries, bounds, qrels=qrels)
        payload["home_depot"] = {"products": len(products), **result}
        if args.synthetic:
            catalog = synthetic_products(products["title"].tolist(), args.synthetic)
            table = lexical_table(url, "synthetic_lexical", catalog)
            sample = dict(list(queries.items())[: args.synthetic_queries])
            result = measure(table, sample, bounds)
            payload["synthetic"] = {"products": args.synthetic, **result}
    write(args.out, NAME, payload, markdown(payload))


if __name__ == "__main__":
    main()
