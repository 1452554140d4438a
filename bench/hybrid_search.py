"""Hybrid search on Home Depot's real queries: BM25 in PostgreSQL beside the
vectors, fused in one statement, measured through the database.

1. The fixed export with the search log (shared/tools/export_home_depot.py
   --logs): 17,936 products, 1,000 test queries, and 8,078 OTHER judged queries
   that stand for a shop's search log.
2. A model fine-tuned on offline queries for the judged products with the
   project's default recipe (bench/results/hybrid_search.* were measured with
   the reference recipe and the first offline generator); --fine-tuned DIR
   reuses a saved one. Its held-out generated queries are the synthetic test
   set.
3. BM25's k1 and b, then the fusion (RRF k, weights, or weighted scores), are
   chosen on the search log, never on the test queries: k1, b with the
   reference library; the fusion through the database, the best search-log
   NDCG@10 (base model) among the settings that keep hybrid within 0.005 of
   its better lane, with either model, on a validation half of the held-out
   generated queries (the other half is the synthetic test set).
4. Both models' search tables are built by the deployment node and every mode
   is scored through SearchTable.search (the code of /search) on the 1,000
   real queries (graded) and the held-out generated queries (binary).
5. In-database BM25 against bm25s on the same analyser and corpus.
6. Latency of each mode (without the query embedding) at 17,936 products and
   on the full 54,667-title catalog, after a warm-up pass.

    .venv/bin/python bench/hybrid_search.py [--fine-tuned DIR] [--limit N]
        [--log-queries N] [--skip-full-catalog]
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pandas as pd
from common import (
    NO_NEGATIVES,
    SHARED,
    environment,
    fmt_p,
    generate_queries,
    load_params,
    parse_args,
    scratch_database,
    setup,
    write_results,
)
from home_depot import build_table, export, training_products
from sentence_transformers import SentenceTransformer

from product_search import metrics as m
from product_search import promotion
from product_search.pipelines.data_generation.products import prepare_products
from product_search.pipelines.data_generation.split import split_queries
from product_search.pipelines.training.embedding import train_model
from product_search.scoring import search_mode_runs, search_run
from product_search.search.analyzer import analyze
from product_search.search.index import unit_vectors
from product_search.search.table import SearchOptions, SearchTable

NAME = "hybrid_search"
TRAIN_CSV = SHARED / "data" / "home-depot-search-relevance" / "train.csv"
SEED = 42
METRICS = ["ndcg@10", "ndcg_burges@10", "mrr@10", "recall@10", "recall@100"]
K = 100
BM25_GRID = list(itertools.product([0.9, 1.2, 1.5], [0.5, 0.75, 0.9]))
FUSION_GRID = [
    {"fusion": "rrf", "rrf_k": rrf_k, "dense_weight": dense, "lexical_weight": 1.0}
    for rrf_k in (5, 10, 30, 60)
    for dense in (0.3, 0.5, 0.75, 1.0)
] + [
    {"fusion": "weighted", "dense_weight": dense, "lexical_weight": 1.0 - dense}
    for dense in (0.3, 0.35, 0.4, 0.45, 0.5, 0.6)
]
# Hybrid may lose at most this much NDCG@10 to its better lane: the project's
# search.tuning.max_lane_gap, the tolerance the evaluation's tuning keeps.
TOLERANCE = float(load_params("search")["tuning"]["max_lane_gap"])
LATENCY_QUERIES = 500


def log_judgments(logs: pd.DataFrame, n: int) -> tuple[dict, dict]:
    """``n`` search-log queries (seeded) with a relevant product: (queries, qrels)."""
    logs = logs.assign(relevance=logs["relevance"].astype(int))
    useful = logs.groupby("query")["relevance"].max() > 0
    picked = (
        useful[useful]
        .index.to_series()
        .sample(n=min(n, int(useful.sum())), random_state=SEED)
    )
    qids = {query: f"log{i:05d}" for i, query in enumerate(sorted(picked))}
    qrels: dict[str, dict[str, int]] = {}
    for row in logs[logs["query"].isin(qids)].itertuples(index=False):
        qrels.setdefault(qids[row.query], {})[row.product_id] = int(row.relevance)
    return {qid: query for query, qid in qids.items()}, qrels


def mean_metrics(qrels: dict, run: dict, names: list[str]) -> dict[str, Any]:
    per_query = m.graded_metrics(qrels, run, names)
    return {
        "mean": {
            name: float(np.mean(list(v.values()))) for name, v in per_query.items()
        },
        "per_query": per_query,
    }


def reference_runs(
    products: pd.DataFrame, queries: dict[str, str], k1: float, b: float, k: int
) -> dict[str, dict[str, float]]:
    """bm25s (Lucene's BM25) over our analyser's terms."""
    retriever = bm25s.BM25(method="lucene", k1=k1, b=b)
    retriever.index([analyze(t) for t in products["text"]], show_progress=False)
    ids = products["product_id"].tolist()
    runs = {}
    for qid, query in queries.items():
        terms = analyze(query)
        if not terms:  # only stop words: nothing to match
            runs[qid] = {}
            continue
        scores = retriever.get_scores(terms)
        top = [i for i in np.argsort(-scores, kind="stable")[:k] if scores[i] > 0]
        runs[qid] = {ids[i]: float(scores[i]) for i in top}
    return runs


def choose_bm25(products: pd.DataFrame, log_q: dict, log_qrels: dict) -> dict:
    results = []
    for k1, b in BM25_GRID:
        run = reference_runs(products, log_q, k1, b, 10)
        ndcg = mean_metrics(log_qrels, run, ["ndcg@10"])["mean"]["ndcg@10"]
        results.append({"k1": k1, "b": b, "ndcg@10": ndcg})
        print(f"BM25 k1={k1} b={b}: log NDCG@10 {ndcg:.4f}")
    best = max(results, key=lambda r: r["ndcg@10"])
    return {"grid": results, "chosen": {"k1": best["k1"], "b": best["b"]}}


def choose_fusion(
    tables: dict[str, SearchTable], models: dict[str, SentenceTransformer],
    log: tuple[dict, dict], validation: tuple[dict, dict],
) -> dict:  # fmt: skip
    """The fusion with the best search-log NDCG@10 among those that keep
    hybrid within TOLERANCE of its better lane on held-out generated queries
    that are not test queries (the validation half), with either model."""
    sets = {"log": log, "validation": validation}
    vectors = {
        (name, model): unit_vectors(models[model], list(queries.values()), 64)
        for name, (queries, _) in sets.items()
        for model in models
    }

    def ndcg(name: str, model: str, mode: str, options: SearchOptions) -> float:
        queries, qrels = sets[name]
        run = search_run(
            tables[model], queries, None if mode == "lexical" else vectors[name, model],
            mode=mode, k=10, options=options,
        )  # fmt: skip
        return mean_metrics(qrels, run, ["ndcg@10"])["mean"]["ndcg@10"]

    lanes = {
        model: max(ndcg("validation", model, mode, SearchOptions()) for mode in ("lexical", "dense"))
        for model in models
    }  # fmt: skip
    results = []
    for config in FUSION_GRID:
        options = SearchOptions(**config)
        gaps = {
            model: ndcg("validation", model, "hybrid", options) - lanes[model]
            for model in models
        }
        log_ndcg = ndcg("log", "base", "hybrid", options)
        results.append(config | {"log_ndcg@10": log_ndcg, "validation_gap": gaps})
        print(
            f"fusion {config}: log NDCG@10 {log_ndcg:.4f}, gap to the better lane {gaps}"
        )
    eligible = [
        r for r in results if min(r["validation_gap"].values()) >= -TOLERANCE
    ] or results
    best = max(eligible, key=lambda r: r["log_ndcg@10"])
    return {
        "validation_best_lane": lanes,
        "grid": results,
        "chosen": {
            key: value for key, value in best.items()
            if key not in ("log_ndcg@10", "validation_gap")
        },
    }  # fmt: skip


def compare(per_query: dict, a: str, b: str, metric: str = "ndcg@10") -> dict:
    """Paired test and bootstrap CI of mode ``b`` minus mode ``a``."""
    comparison = promotion.paired_comparison(
        per_query[a][metric], per_query[b][metric], alpha=0.05, samples=2000,
        seed=SEED,
    )  # fmt: skip
    return {
        "delta": comparison["mean_delta"],
        "wilcoxon_p_value": comparison["wilcoxon_p_value"],
        "ci95_low": comparison["ci95_low"],
        "ci95_high": comparison["ci95_high"],
    }


def evaluate(
    tables: dict, models: dict, queries: dict, qrels: dict, options: SearchOptions
) -> dict:
    runs = search_mode_runs(
        tables, models, queries, k=K, options=dict.fromkeys(tables, options)
    )
    result = {mode: mean_metrics(qrels, run, METRICS) for mode, run in runs.items()}
    per_query = {mode: r.pop("per_query") for mode, r in result.items()}
    comparisons = {}
    for model in models:
        for lane in ("lexical", f"dense_{model}"):
            comparisons[f"hybrid_{model} vs {lane}"] = compare(
                per_query, lane, f"hybrid_{model}"
            )
    return {
        "queries": len(queries),
        "modes": {mode: r["mean"] for mode, r in result.items()},
        "comparisons": comparisons,
    }


def latency(
    table: SearchTable, queries: list[str], vectors: np.ndarray, options: SearchOptions
) -> dict:
    """p50/p95 in ms of each mode at k = 10, after one untimed pass."""
    out = {}
    for mode in ("lexical", "dense", "hybrid"):
        for query, vector in zip(queries, vectors, strict=True):  # warm-up
            table.search(query, vector, 10, mode=mode, options=options)
        times = []
        for query, vector in zip(queries, vectors, strict=True):
            started = time.perf_counter()
            table.search(query, vector, 10, mode=mode, options=options)
            times.append(1000 * (time.perf_counter() - started))
        qs = statistics.quantiles(times, n=100)
        out[mode] = {"p50_ms": qs[49], "p95_ms": qs[94], "queries": len(times)}
        print(f"{mode}: p50 {qs[49]:.1f} ms, p95 {qs[94]:.1f} ms")
    return out


def full_catalog(params: dict) -> pd.DataFrame:
    raw = pd.read_csv(TRAIN_CSV, encoding="latin-1")
    raw = raw.drop_duplicates("product_uid")
    frame = pd.DataFrame(
        {
            "product_id": "hd-" + raw["product_uid"].astype(str),
            "title": raw["product_title"].str.strip(),
        }
    )
    for column in ("brand", "category", "price", "description"):
        frame[column] = ""
    products, _ = prepare_products(frame, params)
    return products


def fine_tuned_model(
    *,
    args: Any, base: SentenceTransformer, products: pd.DataFrame, qrels: pd.DataFrame,
    params: dict, device: str,
) -> tuple[SentenceTransformer, pd.DataFrame]:  # fmt: skip
    """The fine-tuned model of bench/home_depot.py and its held-out queries."""
    _, queries, _ = generate_queries(training_products(products, qrels, None), params)
    train, _, test = split_queries(queries, params)
    if args.fine_tuned:
        model = SentenceTransformer(str(args.fine_tuned), device=device)
    else:
        training = load_params("training") | {"device": device}
        model, _ = train_model(train, NO_NEGATIVES, products, base, training)
    model.model_card_data.model_id = "all-MiniLM-L6-v2 fine-tuned (Home Depot)"
    return model, test


def _config(r: dict) -> str:
    if r["fusion"] == "rrf":
        return f"rrf k={r['rrf_k']}, dense {r['dense_weight']:g} : lexical 1"
    return f"weighted, dense {r['dense_weight']:g} : lexical {r['lexical_weight']:g}"


def markdown(payload: dict) -> str:
    env = payload["environment"]
    lines = [
        "# Hybrid search on Home Depot: BM25 in PostgreSQL fused with vectors",
        "",
        f"{payload['data']['corpus_products']:,} products (titles), "
        f"{payload['data']['real_queries']:,} real queries with graded judgments; "
        f"defaults chosen on {payload['tuning']['log_queries']:,} search-log "
        f"queries that are not test queries. CPU: {env['cpu_count']} cores, "
        f"commit {env['git_commit']}."
        + (f" **Smoke run (--limit {payload['limit']}).**" if payload["limit"] else ""),
        "",
        f"Chosen on the log: BM25 k1 = {payload['tuning']['bm25']['chosen']['k1']}, "
        f"b = {payload['tuning']['bm25']['chosen']['b']}; fusion "
        f"{payload['tuning']['fusion']['chosen']}: the best log NDCG@10 among the "
        f"settings that keep hybrid within {TOLERANCE} of its better lane on "
        f"{payload['tuning']['validation_queries']:,} validation generated queries "
        "(not test queries), with either model.",
        "",
        "| Fusion | Log NDCG@10 (base) | Gap to better lane, base | fine-tuned |",
        "|---|---|---|---|",
        *(
            f"| {_config(r)} | {r['log_ndcg@10']:.4f} | "
            f"{r['validation_gap']['base']:+.4f} | "
            f"{r['validation_gap']['fine_tuned']:+.4f} |"
            for r in payload["tuning"]["fusion"]["grid"]
        ),
        "",
    ]
    header = "| Mode | NDCG@10 | NDCG@10 (2^rel-1) | MRR@10 | Recall@10 | Recall@100 |"
    for key, title in (
        ("real_queries", "Real queries (graded 0..6)"),
        ("generated_queries", "Held-out generated queries (binary)"),
    ):
        result = payload["results"][key]
        lines += [
            f"## {title}, n = {result['queries']:,}",
            "",
            header,
            "|---" * 6 + "|",
        ]
        for mode, v in result["modes"].items():
            lines.append(
                f"| {mode} | " + " | ".join(f"{v[name]:.4f}" for name in METRICS) + " |"
            )
        lines += [
            "",
            "| Comparison (NDCG@10) | Delta | Wilcoxon p | 95% CI |",
            "|---|---|---|---|",
        ]
        for name, c in result["comparisons"].items():
            lines.append(
                f"| {name} | {c['delta']:+.4f} | {fmt_p(c['wilcoxon_p_value'])} | "
                f"[{c['ci95_low']:+.4f}, {c['ci95_high']:+.4f}] |"
            )
        lines.append("")
    ref = payload["bm25_reference"]
    lines += [
        "## In-database BM25 vs bm25s (same analyser, same k1 and b)",
        "",
        f"Real queries: NDCG@10 database {ref['database']['ndcg@10']:.4f}, bm25s "
        f"{ref['reference']['ndcg@10']:.4f} (difference "
        f"{ref['database']['ndcg@10'] - ref['reference']['ndcg@10']:+.4f}); "
        f"largest score difference over the top 10 of each query "
        f"{ref['max_abs_score_difference']:.2e}; same top 10 for "
        f"{ref['same_top10_share']:.1%} of the queries.",
        "",
        "## Latency without the query embedding (k = 10, 2 cores)",
        "",
        "| Products | Mode | p50 ms | p95 ms |",
        "|---|---|---|---|",
    ]
    for size, modes in payload["latency"].items():
        for mode, v in modes.items():
            lines.append(f"| {size} | {mode} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:  # noqa: PLR0915
    parser = parse_args(__doc__, "keep N test queries (smoke run)")
    parser.add_argument("--fine-tuned", type=Path, help="a saved fine-tuned model")
    parser.add_argument("--log-queries", type=int, default=2000)
    parser.add_argument("--skip-full-catalog", action="store_true")
    args = parser.parse_args()
    device, base = setup(args.device)
    params = load_params("data_generation") | {"provider": "offline"}
    with tempfile.TemporaryDirectory(prefix="hybrid-") as tmp:
        data = export(Path(tmp) / "export")
        url = scratch_database(Path(tmp))
        products, _ = prepare_products(data["products"], params)
        queries = dict(
            zip(data["queries"]["query_id"], data["queries"]["query"], strict=True)
        )
        if args.limit:
            queries = dict(sorted(queries.items())[: args.limit])
        qrels: dict[str, dict[str, int]] = {}
        for row in data["qrels"].itertuples(index=False):
            if row.query_id in queries:
                qrels.setdefault(row.query_id, {})[row.product_id] = int(row.relevance)
        judged = {q for q, docs in qrels.items() if max(docs.values()) > 0}
        queries = {q: t for q, t in queries.items() if q in judged}
        qrels = {q: qrels[q] for q in queries}
        log_q, log_qrels = log_judgments(data["search_logs"], args.log_queries)
        assert not set(log_q.values()) & set(queries.values()), "log leaks test queries"

        tuned, generated_test = fine_tuned_model(
            args=args, base=base, products=products, qrels=data["qrels"],
            params=params, device=device,
        )  # fmt: skip
        bm25 = choose_bm25(products, log_q, log_qrels)
        tables = {
            "base": build_table(url, "hd_base", products, base, bm25["chosen"]),
            "fine_tuned": build_table(
                url, "hd_fine_tuned", products, tuned, bm25["chosen"]
            ),
        }
        models = {"base": base, "fine_tuned": tuned}
        # Held-out generated queries: one half tunes, 1,000 of the other test.
        halves = generated_test.sample(frac=1.0, random_state=SEED)
        validation = halves.iloc[len(halves) // 2 :].head(1000)
        generated = halves.iloc[: len(halves) // 2].head(1000)
        fusion = choose_fusion(
            tables, models, (log_q, log_qrels),
            (
                dict(zip(validation["query_id"], validation["query"], strict=True)),
                {q: {p: 1} for q, p in zip(validation["query_id"], validation["product_id"], strict=True)},
            ),
        )  # fmt: skip
        options = SearchOptions(**fusion["chosen"])

        results = {
            "real_queries": evaluate(tables, models, queries, qrels, options),
            "generated_queries": evaluate(
                tables, models,
                dict(zip(generated["query_id"], generated["query"], strict=True)),
                {q: {p: 1} for q, p in zip(generated["query_id"], generated["product_id"], strict=True)},
                options,
            ),
        }  # fmt: skip

        database = mean_metrics(
            qrels,
            search_run(
                tables["base"], queries, None, mode="lexical", k=K, options=options
            ),
            METRICS,
        )["mean"]
        reference = reference_runs(
            products, queries, bm25["chosen"]["k1"], bm25["chosen"]["b"], K
        )
        db_top = {
            qid: {
                h.product_id: h.score
                for h in tables["base"].search(text, None, 10, mode="lexical")
            }
            for qid, text in queries.items()
        }
        differences, same = [], 0
        for qid, hits in db_top.items():
            ref_top = dict(itertools.islice(reference[qid].items(), 10))
            same += set(hits) == set(ref_top)
            differences += [
                abs(s - ref_top[p]) for p, s in hits.items() if p in ref_top
            ]
        bm25_reference = {
            "database": database,
            "reference": mean_metrics(qrels, reference, METRICS)["mean"],
            "max_abs_score_difference": max(differences) if differences else 0.0,
            "same_top10_share": same / len(db_top),
        }  # fmt: skip

        texts = list(queries.values())[:LATENCY_QUERIES]
        vectors = unit_vectors(base, texts, 64)
        timings = {
            f"{len(products):,}": latency(tables["base"], texts, vectors, options)
        }
        if not args.skip_full_catalog:
            full = full_catalog(params)
            print(f"Encoding the full catalog: {len(full):,} titles")
            table = build_table(url, "hd_full", full, base, bm25["chosen"])
            timings[f"{len(full):,}"] = latency(table, texts, vectors, options)
        for table in tables.values():
            table.engine.dispose()

    payload = {
        "benchmark": NAME,
        "limit": args.limit,
        "environment": environment(device),
        "data": {
            "corpus_products": len(products),
            "real_queries": len(queries),
            "generated_queries": len(generated),
        },
        "tuning": {
            "log_queries": len(log_q),
            "validation_queries": len(validation),
            "bm25": bm25,
            "fusion": fusion,
        },
        "options": options.model_dump(),
        "results": results,
        "bm25_reference": bm25_reference,
        "latency": timings,
    }
    write_results(args.out, NAME, payload, markdown(payload))


if __name__ == "__main__":
    main()
