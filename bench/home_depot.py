"""Does fine-tuning on generated queries help real shoppers? Home Depot's human
judgments say.

The fixed protocol of shared/data/README.md: shared/tools/export_home_depot.py
writes 1,000 real search queries, their graded judgments (0..6) and a corpus of
every judged product plus 10,000 distractors (~15k products, titles only). The
project then writes offline queries for the judged products (the training set;
--train-products caps it), holds out 20% of them (split by query, seed 42),
fine-tunes with the reference recipe, and the evaluation nodes score base vs
fine-tuned on the REAL queries over the full corpus: graded NDCG@10, MRR@10 and
Recall@10 (ranx), with the held-out generated queries beside them. Writes
bench/results/home_depot.{json,md}.

    .venv/bin/python bench/home_depot.py [--device cpu|cuda] [--limit N]
        [--train-products N]

Encoding the corpus is the cost (~45 texts/s on 2 CPU cores), so the full run
is meant for a GPU. --limit N keeps N real queries (the first by id), their
judged products and 10 distractors per query: a CPU smoke run, not comparable
with the protocol's figures.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import (
    NO_NEGATIVES,
    SHARED,
    environment,
    evaluate,
    fmt_change,
    fmt_ci,
    fmt_p,
    fmt_pct,
    generate_queries,
    load_params,
    parse_args,
    setup,
    training_summary,
    write_results,
)

from product_search.pipelines.data_generation import nodes as generation
from product_search.pipelines.training.nodes import train_model

NAME = "home_depot"
EXPORT = SHARED / "tools" / "export_home_depot.py"
DISTRACTORS_PER_QUERY = 10
SEED = 42


def export(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run the fixed export; read its files as the project's datasets would."""
    subprocess.run([sys.executable, str(EXPORT), str(out_dir)], check=True)
    read = {"dtype": str, "keep_default_na": False}
    return (
        pd.read_csv(out_dir / "products.csv", **read),
        pd.read_csv(out_dir / "queries.csv", **read),
        pd.read_csv(out_dir / "qrels.csv", **read),
    )


def limit_to(
    limit: int, raw: pd.DataFrame, queries: pd.DataFrame, qrels: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The first ``limit`` queries, their judged products and a few distractors."""
    queries = queries.sort_values("query_id").head(limit)
    qrels = qrels[qrels["query_id"].isin(queries["query_id"])]
    judged = raw["product_id"].isin(qrels["product_id"])
    distractors = raw[~judged].sample(
        n=min(limit * DISTRACTORS_PER_QUERY, int((~judged).sum())), random_state=SEED
    )
    return pd.concat([raw[judged], distractors]), queries, qrels


def training_products(
    products: pd.DataFrame, qrels: pd.DataFrame, cap: int | None
) -> pd.DataFrame:
    """The judged products, or ``cap`` of them sampled with the seed."""
    judged = products[products["product_id"].isin(qrels["product_id"])]
    if cap and cap < len(judged):
        judged = judged.sample(n=cap, random_state=SEED).sort_index()
    return judged


def markdown(payload: dict) -> str:
    env, data = payload["environment"], payload["data"]
    real = payload["metrics"]["real_queries"]
    synthetic = payload["metrics"]
    rows = [
        (
            "Real queries (graded)",
            real["queries"],
            real["metrics"],
            real["significance"],
        ),
        (
            "Held-out generated queries",
            synthetic["test_queries"],
            synthetic["metrics"],
            synthetic["significance"],
        ),
    ]
    lines = [
        "# Home Depot real queries: base vs fine-tuned all-MiniLM-L6-v2",
        "",
        f"Corpus: {data['corpus_products']:,} products (titles only); "
        f"{real['queries']:,} real queries with {real['judgments']:,} judgments "
        f"({real['skipped_without_relevant']} queries with no relevant product "
        "skipped). Fine-tuned on offline-generated queries for "
        f"{data['training_products']:,} judged products "
        f"({payload['training']['train_pairs']:,} pairs, reference recipe). "
        f"Device: {env['device']}"
        + (f" ({env['accelerator']})" if env["accelerator"] else "")
        + f", commit {env['git_commit']}."
        + (
            f" **Smoke run (--limit {payload['limit']}): not comparable with the "
            "protocol's figures.**"
            if payload["limit"]
            else ""
        ),
        "",
        "| Queries | n | NDCG@10 base | NDCG@10 fine-tuned | Delta | % | "
        "Wilcoxon p | 95% CI of delta | MRR@10 | Recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, n, metrics, sig in rows:
        ndcg = metrics["ndcg@10"]
        lines.append(
            f"| {label} | {n:,} | {ndcg['baseline']:.4f} | {ndcg['fine_tuned']:.4f} | "
            f"{ndcg['delta']:+.4f} | {fmt_pct(ndcg['pct_change'])} | "
            f"{fmt_p(sig['wilcoxon_p_value'])} | {fmt_ci(sig)} | "
            f"{fmt_change(metrics['mrr@10'])} | {fmt_change(metrics['recall@10'])} |"
        )
    timings = payload["timings_s"]
    lines += [
        "",
        "Real queries: graded NDCG@10 with linear gains on relevance 0..6; MRR@10 and "
        "Recall@10 count relevance > 0 (ranx). Generated queries: binary, one "
        "relevant product each. MRR@10, Recall@10: base → fine-tuned.",
        "",
        "| Stage | Wall time (s) |",
        "|---|---|",
        *(f"| {stage} | {seconds:.1f} |" for stage, seconds in timings.items()),
        "",
        f"Training throughput: {payload['training']['pairs_per_s']:.1f} pairs/s.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = parse_args(__doc__, "keep N real queries (CPU smoke run)")
    parser.add_argument(
        "--train-products", type=int, default=None,
        help="cap on the judged products that get generated training queries",
    )  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    device, base_model = setup(args.device)

    step = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="home-depot-") as tmp:
        raw, judged_queries, qrels = export(Path(tmp))
    if args.limit:
        raw, judged_queries, qrels = limit_to(args.limit, raw, judged_queries, qrels)
    timings["export"] = time.perf_counter() - step

    params = load_params("data_generation") | {"provider": "offline"}
    products, product_report = generation.prepare_products(raw, params)
    train_products = training_products(products, qrels, args.train_products)
    step = time.perf_counter()
    generated, queries, query_report = generate_queries(train_products, params)
    train, test = generation.split_queries(queries, params)
    timings["query generation"] = time.perf_counter() - step

    training = load_params("training") | {"device": device}
    print(f"Training on {len(train)} pairs of {len(train_products)} products")
    fine_tuned, history = train_model(
        train, NO_NEGATIVES, products, base_model, training
    )
    fine_tuned.model_card_data.model_id = "all-MiniLM-L6-v2 fine-tuned (Home Depot)"
    timings["training"] = history["wall_time_s"]

    metrics, timings["evaluation (both models)"] = evaluate(
        base_model, fine_tuned.to(device), products, test, (judged_queries, qrels)
    )
    timings["total"] = time.perf_counter() - started
    payload = {
        "benchmark": NAME,
        "limit": args.limit,
        "train_products_cap": args.train_products,
        "environment": environment(device),
        "data": {
            "corpus_products": len(products),
            "real_queries": len(judged_queries),
            "judgments": len(qrels),
            "training_products": len(train_products),
            "generated_queries": len(generated),
            "kept_queries": len(queries),
            "held_out_generated_queries": len(test),
        },
        "product_report": product_report,
        "query_report": query_report,
        "training": training_summary(history),
        "metrics": metrics,
        "timings_s": timings,
    }
    write_results(args.out, NAME, payload, markdown(payload))


if __name__ == "__main__":
    main()
