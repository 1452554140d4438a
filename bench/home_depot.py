"""Does fine-tuning help real shoppers? Home Depot's human judgments say, for
models fine-tuned on offline-generated queries, on a shop's search log, and on
both.

The fixed protocol of shared/data/README.md: shared/tools/export_home_depot.py
--logs writes 1,000 real search queries with graded judgments (0..6), a corpus
of every judged product plus 10,000 distractors (17,936 products, titles only),
and a search log of 18,601 judgments of 8,078 OTHER queries. The project's own
nodes then:

- write offline queries for the judged products and hold out 20% of them (by
  query, seed 42): the synthetic test set; `split_queries` also holds out
  validation queries (10% of the other offline queries, 5% of the logged
  ones) that no model trains on;
- read the log with `prepare_search_logs` (positives at relevance >= 4, hard
  negatives at <= 1) and pass everything through `mix_query_sources`, whose
  leakage guard removes any query equal to one of the 1,000 test queries;
- fine-tune with the project's default recipe (conf/base/parameters_training.yml)
  on each source: offline queries only, the log only, and both;
- score every model against the base model on the 1,000 real queries with the
  evaluation nodes (exact cosine search; graded NDCG@10, MRR@10, Recall@10,
  Wilcoxon p and bootstrap 95% CI), and in every search mode through the
  database (the deployment node's table, SearchTable.search), hybrid with the
  fusion `tune_search_options` chose for that model on the validation queries
  (and, beside it, with the project's default fusion).

Writes bench/results/home_depot.{json,md}.

    .venv/bin/python bench/home_depot.py [--device cpu|cuda] [--limit N]
        [--sources offline,log,both] [--train-products N] [--models DIR]
        [--positive-min R]

On 2 CPU cores the three trainings take about 40 minutes; --train-products N
trains the offline source on N judged products (state it with the figures).
--limit N keeps N real queries, their judged products and 10 distractors per
query: a smoke run, not comparable with the protocol's figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import (
    SHARED,
    environment,
    fmt_ci,
    fmt_p,
    fmt_pct,
    generate_queries,
    load_params,
    parse_args,
    provenance,
    scratch_database,
    setup,
    training_summary,
    write_results,
)
from sentence_transformers import SentenceTransformer

from product_search import metrics as m
from product_search import promotion
from product_search.datasets import PgVectorTableDataset
from product_search.pipelines.data_generation.products import prepare_products
from product_search.pipelines.data_generation.search_logs import prepare_search_logs
from product_search.pipelines.data_generation.split import (
    mix_query_sources,
    split_queries,
)
from product_search.pipelines.evaluation.nodes import compare_models, promotion_verdict
from product_search.pipelines.evaluation.report import fusion_label
from product_search.pipelines.evaluation.search_modes import evaluate_search_modes
from product_search.pipelines.evaluation.tuning import tune_search_options
from product_search.pipelines.training.embedding import train_model
from product_search.scoring import build_evaluation_set, evaluate_model, search_run
from product_search.search.index import unit_vectors
from product_search.search.indexing import index_products
from product_search.search.table import SearchOptions, SearchTable

NAME = "home_depot"
EXPORT = SHARED / "tools" / "export_home_depot.py"
DISTRACTORS_PER_QUERY = 10
SEED = 42
SOURCES = {
    "offline": "offline queries only",
    "log": "search log only",
    "both": "offline queries + search log",
}


def export(out_dir: Path) -> dict[str, pd.DataFrame]:
    """Run the fixed export; read its files as the project's datasets would."""
    subprocess.run([sys.executable, str(EXPORT), str(out_dir), "--logs"], check=True)
    read = {"dtype": str, "keep_default_na": False}
    return {
        name: pd.read_csv(out_dir / f"{name}.csv", **read)
        for name in ("products", "queries", "qrels", "search_logs")
    }


def limit_to(limit: int, data: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The first ``limit`` queries, their judged products and a few distractors;
    the log keeps its rows about the kept products."""
    queries = data["queries"].sort_values("query_id").head(limit)
    qrels = data["qrels"][data["qrels"]["query_id"].isin(queries["query_id"])]
    raw = data["products"]
    judged = raw["product_id"].isin(qrels["product_id"])
    distractors = raw[~judged].sample(
        n=min(limit * DISTRACTORS_PER_QUERY, int((~judged).sum())), random_state=SEED
    )
    products = pd.concat([raw[judged], distractors])
    logs = data["search_logs"]
    return {
        "products": products,
        "queries": queries,
        "qrels": qrels,
        "search_logs": logs[logs["product_id"].isin(products["product_id"])],
    }


def training_products(
    products: pd.DataFrame, qrels: pd.DataFrame, cap: int | None
) -> pd.DataFrame:
    """The judged products, or ``cap`` of them sampled with the seed."""
    judged = products[products["product_id"].isin(qrels["product_id"])]
    if cap and cap < len(judged):
        judged = judged.sample(n=cap, random_state=SEED).sort_index()
    return judged


def training_sets(
    data: dict[str, pd.DataFrame], products: pd.DataFrame, params: dict,
    cap: int | None,
) -> tuple[dict[str, tuple[pd.DataFrame, pd.DataFrame]], pd.DataFrame, pd.DataFrame, dict]:  # fmt: skip
    """(pairs, logged negatives) of every source, the validation queries
    (generated and logged, held out of every source's training), the held-out
    generated test queries, and the data reports."""
    judged_products = training_products(products, data["qrels"], cap)
    _, generated, query_report = generate_queries(judged_products, params)
    positives, negatives, log_report = prepare_search_logs(
        data["search_logs"], products, params
    )
    # The guard and the split as the pipeline runs them; the test queries
    # are the judged queries that must never train.
    pool, negatives, source_report = mix_query_sources(
        generated, positives, negatives, data["queries"], params
    )
    train, validation, test = split_queries(pool, params)
    offline = train[train["source"] == "generated"]
    logged = train[train["source"] == "log"]
    sets = {
        "offline": (offline, negatives[:0]),
        "log": (logged, negatives),
        "both": (train, negatives),
    }
    reports = {
        "training_products": len(judged_products),
        "queries": query_report,
        "search_logs": log_report,
        "query_sources": source_report,
    }
    return sets, validation, test, reports


def add_log_thresholds(parser, positive_min: float | None = None) -> None:
    """--positive-min and --negative-max: how the search log's relevance
    reads (default: the project's data_generation.search_logs)."""
    parser.add_argument(
        "--positive-min", type=float, default=positive_min,
        help="search-log relevance that makes a training pair (default: "
        + (str(positive_min) if positive_min is not None else "the project's")
        + ")",
    )  # fmt: skip
    parser.add_argument(
        "--negative-max", type=float, default=None,
        help="search-log relevance at or below which a pair is a hard negative "
        "(default: the project's data_generation.search_logs.negative_max)",
    )  # fmt: skip


def generation_params(args) -> dict:
    """The project's data_generation parameters, offline, with the log's
    thresholds from add_log_thresholds' flags."""
    params = load_params("data_generation") | {"provider": "offline"}
    if args.positive_min is not None:
        params["search_logs"]["positive_min"] = args.positive_min
    if args.negative_max is not None:
        params["search_logs"]["negative_max"] = args.negative_max
    return params


def trained_model(
    source: str,
    data: tuple[pd.DataFrame, pd.DataFrame],
    *,
    products: pd.DataFrame,
    base_model: SentenceTransformer,
    training: dict,
    keep: Path | None,
) -> tuple[SentenceTransformer, dict]:
    """The model fine-tuned on ``source`` and its history, from ``keep`` when
    an earlier run left them there (same data and recipe), else trained."""
    folder = keep / source if keep else None
    if folder and (folder / "history.json").exists():
        history = json.loads((folder / "history.json").read_text())
        same_recipe = history["parameters"] == json.loads(json.dumps(training))
        # Compared with the pairs given, before duplicates are dropped.
        if same_recipe and history["pairs"]["input_pairs"] == len(data[0]):
            print(f"Reusing the model trained on {SOURCES[source]} in {folder}")
            device = training["device"]
            return SentenceTransformer(str(folder), device=device), history
    pairs, negatives = data
    print(f"Training on {SOURCES[source]}: {len(pairs):,} pairs")
    model, history = train_model(pairs, negatives, products, base_model, training)
    if folder:
        model.save(str(folder))
        (folder / "history.json").write_text(json.dumps(history))
    return model, history


def build_table(
    url: str, name: str, products: pd.DataFrame, model: SentenceTransformer,
    bm25: dict | None = None,
) -> SearchTable:  # fmt: skip
    """A search table built by the deployment node, with the project's BM25
    parameters unless ``bm25`` gives others."""
    dataset = PgVectorTableDataset(
        table_name=name, dimension=384, credentials={"con": url}
    )
    params = load_params("deployment") | {"batch_size": 256}
    bm25 = bm25 or load_params("search")["bm25"]
    dataset.save(index_products(products, model, params, {"bm25": bm25}))
    return dataset.load()


def hybrid_per_query(
    table, model, queries: dict[str, str], qrels: dict, options: SearchOptions
) -> dict[str, float]:
    """Per-query graded NDCG@10 of hybrid search through the database."""
    vectors = unit_vectors(model, list(queries.values()), 64)
    run = search_run(table, queries, vectors, mode="hybrid", k=10, options=options)
    return m.graded_metrics(qrels, run, ["ndcg@10"])["ndcg@10"]


def paired(base: dict[str, float], other: dict[str, float]) -> dict[str, Any]:
    comparison = promotion.paired_comparison(
        base, other, alpha=0.05, samples=2000, seed=SEED
    )
    return {
        "baseline": float(np.mean(list(base.values()))),
        "value": float(np.mean([other[q] for q in base])),
        "delta": comparison["mean_delta"],
        "wilcoxon_p_value": comparison["wilcoxon_p_value"],
        "ci95_low": comparison["ci95_low"],
        "ci95_high": comparison["ci95_high"],
        "significant": comparison["significant"],
    }


def _modes_row(label: str, modes: dict, model: str) -> str:
    """lexical, dense, hybrid and hybrid minus its better lane, on one set."""
    lexical, dense = modes["lexical"]["ndcg@10"], modes[f"dense_{model}"]["ndcg@10"]
    hybrid = modes[f"hybrid_{model}"]["ndcg@10"]
    return (
        f"{label} | {lexical:.4f} | {dense:.4f} | {hybrid:.4f} | "
        f"{hybrid - max(lexical, dense):+.4f}"
    )


def markdown(payload: dict) -> str:
    data = payload["data"]
    lines = [
        "# Home Depot real queries: fine-tuning on offline queries, a search log, "
        "or both",
        "",
        f"Corpus: {data['corpus_products']:,} products (titles only); "
        f"{data['real_queries']:,} real queries with {data['judgments']:,} "
        f"judgments. Offline queries for {data['training_products']:,} judged "
        f"products; search log: {data['log_positive_pairs']:,} positive pairs of "
        f"{data['log_queries']:,} other queries and {data['log_negatives']:,} hard "
        f"negatives; leakage guard removed {data['removed_as_judged']}. Held out of "
        f"every training: {data['validation_queries']} validation queries (they "
        "tune each model's fusion) and "
        f"{data['held_out_generated_queries']:,} generated test queries. Recipe: "
        f"{payload['recipe']}. {provenance(payload)}",
        "",
        "Real queries, graded NDCG@10 against the base model (dense: exact cosine "
        "search; hybrid: through the database, with the fusion tuned for the model "
        "on its validation queries; with the project's default fusion beside it):",
        "",
        "| Model | Training pairs | Dense NDCG@10 | Δ vs base | % | Wilcoxon p | "
        "95% CI | Hybrid NDCG@10 | Δ vs hybrid base | p | Hybrid, default fusion | "
        "Held-out generated |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = payload["base"]
    lines.append(
        f"| Base | – | {base['dense_ndcg@10']:.4f} | | | | | "
        f"{base['hybrid_ndcg@10']:.4f} | | | {base['hybrid_default_fusion']:.4f} | "
        f"{base['generated_ndcg@10']:.4f} |"
    )
    for source, result in payload["models"].items():
        dense, hybrid = result["dense"], result["hybrid"]
        pct = 100 * dense["delta"] / dense["baseline"] if dense["baseline"] else None
        lines.append(
            f"| {SOURCES[source]} | {result['training']['train_pairs']:,} | "
            f"{dense['value']:.4f} | {dense['delta']:+.4f} | {fmt_pct(pct)} | "
            f"{fmt_p(dense['wilcoxon_p_value'])} | {fmt_ci(dense)} | "
            f"{hybrid['value']:.4f} | {hybrid['delta']:+.4f} | "
            f"{fmt_p(hybrid['wilcoxon_p_value'])} | "
            f"{result['hybrid_default_fusion']:.4f} | "
            f"{result['generated_ndcg@10']:.4f} |"
        )
    lines += [
        "",
        "Graded NDCG@10 with linear gains on relevance 0..6 (ranx). Held-out "
        "generated: binary NDCG@10 on the offline queries held out of training.",
        "",
        "Every search mode through the database (`evaluate_search_modes`, the "
        "code behind `/search`), NDCG@10; gap: hybrid minus its better lane:",
        "",
        "| Model | Queries | Lexical | Dense | Hybrid | Gap |",
        "|---|---|---|---|---|---|",
    ]
    for source, result in [("base", base), *payload["models"].items()]:
        label = "Base" if source == "base" else SOURCES[source]
        model = "base" if source == "base" else "fine_tuned"
        for set_name, title in (("real_queries", "real"),
                                ("test_queries", "held-out generated")):  # fmt: skip
            row = _modes_row(title, result["search_modes"][set_name], model)
            lines.append(f"| {label} | {row} |")
    lines += [
        "",
        "Fusion chosen for each model on its validation queries (best NDCG@10 on "
        "the logged ones, hybrid within 0.005 of its better lane on both sources):",
        "",
        "| Model | Fusion | Validation: logged (hybrid / dense / lexical) | "
        "generated (hybrid / dense / lexical) |",
        "|---|---|---|---|",
    ]
    for source, result in [("base", base), *payload["models"].items()]:
        label = "Base" if source == "base" else SOURCES[source]
        tuned = result["fusion"]
        cells = [
            f"{v['hybrid']:.4f} / {v['dense']:.4f} / {v['lexical']:.4f}"
            for v in (tuned["validation"].get(name) for name in ("log", "generated"))
            if v
        ]
        lines.append(
            f"| {label} | {fusion_label(tuned['options'])} | {' | '.join(cells)} |"
        )
    lines += [
        "",
        "| Stage | Wall time (s) |",
        "|---|---|",
        *(f"| {stage} | {s:.1f} |" for stage, s in payload["timings_s"].items()),
        "",
    ]
    return "\n".join(lines)


def main() -> None:  # noqa: PLR0915
    parser = parse_args(__doc__, "keep N real queries (CPU smoke run)")
    parser.add_argument(
        "--train-products", type=int, default=None,
        help="cap on the judged products that get offline training queries",
    )  # fmt: skip
    parser.add_argument("--sources", default="offline,log,both")
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="keep each trained model (and its history) in DIR/<source>; a "
        "later run with the same DIR reuses them instead of training again",
    )
    add_log_thresholds(parser)
    args = parser.parse_args()
    sources = args.sources.split(",")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    device, base_model = setup(args.device)

    with tempfile.TemporaryDirectory(prefix="home-depot-") as tmp:
        data = export(Path(tmp))
    if args.limit:
        data = limit_to(args.limit, data)
    params = generation_params(args)
    products, _ = prepare_products(data["products"], params)
    sets, validation, test, reports = training_sets(
        data, products, params, args.train_products
    )

    eval_params = load_params("evaluation")
    search_params = load_params("search")
    promotion = load_params("deployment", section="promotion")
    evaluation_set = build_evaluation_set(
        products, test.drop(columns="source"), data["queries"], data["qrels"]
    )
    judged = evaluation_set.judged
    default_options = SearchOptions(**search_params["options"])
    step = time.perf_counter()
    base_eval = evaluate_model(base_model, evaluation_set, eval_params)
    timings["evaluation, base"] = time.perf_counter() - step

    def search(table, model) -> dict[str, Any]:
        """The fusion tuned for the model on the validation queries, hybrid
        NDCG@10 per real query with it, and with the project's default fusion."""
        tuned = tune_search_options(
            table, model, validation, search_params, eval_params
        )
        options = tuned.options
        return {
            "fusion": tuned,
            "per_query": hybrid_per_query(
                table, model, judged.queries, judged.qrels, options
            ),
            "default": float(np.mean(list(hybrid_per_query(
                table, model, judged.queries, judged.qrels, default_options
            ).values()))),
        }  # fmt: skip

    def modes(base_table, table, model, base_fusion, fusion) -> dict[str, Any]:
        """Every search mode through the database, as the evaluation runs them."""
        return evaluate_search_modes(
            base_table=base_table, fine_tuned_table=table, base_model=base_model,
            fine_tuned_model=model, base_search_options=base_fusion,
            fine_tuned_search_options=fusion, evaluation_set=evaluation_set,
            params=eval_params | {"search_metrics": ["ndcg@10"]},
            promotion=promotion,
        ).model_dump(mode="json")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="home-depot-pg-") as tmp:
        url = scratch_database(Path(tmp))
        step = time.perf_counter()
        base_table = build_table(url, "hd_base", products, base_model)
        base_search = search(base_table, base_model)
        base_modes = modes(base_table, base_table, base_model,
                           base_search["fusion"], base_search["fusion"])  # fmt: skip
        timings["search, base"] = time.perf_counter() - step
        training = load_params("training") | {"device": device}
        models: dict[str, Any] = {}
        for source in sources:
            model, history = trained_model(
                source, sets[source], products=products, base_model=base_model,
                training=training, keep=args.models,
            )  # fmt: skip
            model.model_card_data.model_id = f"all-MiniLM-L6-v2 fine-tuned ({source})"
            timings[f"training, {source}"] = history["wall_time_s"]
            step = time.perf_counter()
            tuned = evaluate_model(model.to(device), evaluation_set, eval_params)
            metrics, _ = compare_models(
                baseline_evaluation=base_eval, fine_tuned_evaluation=tuned,
                search_mode_metrics=None, evaluation_set=evaluation_set,
                params=eval_params, promotion=promotion,
                verdict=promotion_verdict(base_eval, tuned, eval_params, promotion),
            )  # fmt: skip
            table = build_table(url, f"hd_{source}", products, model)
            found = search(table, model)
            headline = "ndcg@10"
            models[source] = {
                "training": training_summary(history)
                | {"triplets": history["triplets"]},
                "dense": paired(
                    base_eval.real_queries.per_query[headline],
                    tuned.real_queries.per_query[headline],
                ),
                "hybrid": paired(base_search["per_query"], found["per_query"]),
                "hybrid_vs_dense_base": paired(
                    base_eval.real_queries.per_query[headline],
                    found["per_query"],
                ),
                "hybrid_default_fusion": found["default"],
                "fusion": found["fusion"].model_dump(mode="json"),
                "search_modes": modes(
                    base_table, table, model, base_search["fusion"], found["fusion"]
                ),  # fmt: skip
                "real_query_metrics": metrics["real_queries"]["metrics"],
                "generated_ndcg@10": tuned.metrics["ndcg@10"],
                "promotion": {
                    k: metrics["promotion"][k] for k in ("promote", "reason")
                },
            }
            timings[f"evaluation, {source}"] = time.perf_counter() - step
            print(source, models[source]["dense"], models[source]["hybrid"])
    timings["total"] = time.perf_counter() - started
    sources_report = reports["query_sources"]
    payload = {
        "benchmark": NAME,
        "limit": args.limit,
        "train_products_cap": args.train_products,
        "environment": environment(device),
        "log_positive_min": params["search_logs"]["positive_min"],
        "log_negative_max": params["search_logs"]["negative_max"],
        "recipe": (
            f"{training['epochs']} epoch(s), batch {training['batch_size']}, "
            f"lr {training['learning_rate']}, warmup {training['warmup_ratio']}, "
            "MultipleNegativesRankingLoss (logged negatives as triplets)"
        ),
        "data": {
            "corpus_products": len(products),
            "real_queries": len(data["queries"]),
            "judgments": len(data["qrels"]),
            "training_products": reports["training_products"],
            "held_out_generated_queries": len(test),
            "validation_queries": validation.groupby("source")["query_id"]
            .nunique()
            .to_dict(),
            "log_positive_pairs": reports["search_logs"]["positive_pairs"],
            "log_queries": reports["search_logs"]["positive_queries"],
            "log_negatives": sources_report["hard_negatives"],
            "removed_as_judged": sources_report["removed_as_judged"],
        },
        "reports": reports,
        "base": {
            "dense_ndcg@10": base_eval.real_queries.metrics["ndcg@10"],
            "hybrid_ndcg@10": float(np.mean(list(base_search["per_query"].values()))),
            "hybrid_default_fusion": base_search["default"],
            "fusion": base_search["fusion"].model_dump(mode="json"),
            "search_modes": base_modes,
            "generated_ndcg@10": base_eval.metrics["ndcg@10"],
            "real_query_metrics": base_eval.real_queries.metrics,
        },
        "models": models,
        "timings_s": timings,
    }
    write_results(args.out, NAME, payload, markdown(payload))


if __name__ == "__main__":
    main()
