"""The reference recipe on a real catalog: does fine-tuning beat the base model?

1,000 real Amazon products (shared/data/amazon-product-2020-sample1k), shopper
queries from the project's offline generator, an 80/20 split with seed 42, the
reference fine-tuning recipe (3 epochs at 2e-5; the rest as in
conf/base/parameters_training.yml), then base vs
fine-tuned metrics on the held-out queries. Run twice: split by query (the
reference system's way: test products were seen in training with other
queries) and split by product (test products never seen). Every step is the
project's own node function. Writes bench/results/reference_recipe.{json,md}.

    .venv/bin/python bench/reference_recipe.py [--device cpu|cuda] [--limit N]

--limit N keeps the first N products (a CPU smoke run: --limit 40).
"""

from __future__ import annotations

import time

import pandas as pd
from common import (
    AMAZON,
    AMAZON_COLUMNS,
    NO_NEGATIVES,
    REFERENCE_RECIPE,
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

from product_search.pipelines.data_generation.products import prepare_products
from product_search.pipelines.data_generation.split import split_queries
from product_search.pipelines.training.embedding import train_model

NAME = "reference_recipe"
SPLITS = ("query", "product")


def run_split(
    split_by: str,
    *,
    queries: pd.DataFrame,
    products: pd.DataFrame,
    base_model,
    generation_params: dict,
    device: str,
) -> dict:
    """Split, fine-tune and evaluate once."""
    # The reference's 80/20 split: no validation queries (nothing is tuned).
    params = generation_params | {
        "split": generation_params["split"] | {"split_by": split_by, "validation": {}}
    }
    train, _, test = split_queries(queries, params)
    training = load_params("training") | REFERENCE_RECIPE | {"device": device}
    print(f"[{split_by}] training on {len(train)} pairs, testing {len(test)} queries")
    fine_tuned, history = train_model(
        train, NO_NEGATIVES, products, base_model, training
    )
    fine_tuned.model_card_data.model_id = (
        f"all-MiniLM-L6-v2 fine-tuned (split by {split_by})"
    )
    metrics, eval_seconds = evaluate(base_model, fine_tuned.to(device), products, test)
    return {
        "split_by": split_by,
        "train_pairs": len(train),
        "test_queries": len(test),
        "test_products": int(test["product_id"].nunique()),
        "test_products_seen_in_training": int(
            test["product_id"].isin(train["product_id"]).sum()
        ),
        "training": training_summary(history),
        "evaluation_wall_s": eval_seconds,
        "metrics": metrics,
    }


def markdown(payload: dict) -> str:
    env = payload["environment"]
    runs = payload["runs"]
    lines = [
        "# Reference recipe: base vs fine-tuned all-MiniLM-L6-v2",
        "",
        f"Amazon 2020 sample: {payload['products']:,} products, "
        f"{payload['generated_queries']:,} queries from the offline generator "
        f"({payload['kept_queries']:,} after filtering), 80/20 split, seed 42. "
        f"Reference recipe: {payload['training_parameters']}. "
        f"Device: {env['device']}"
        + (f" ({env['accelerator']})" if env["accelerator"] else "")
        + f", commit {env['git_commit']}."
        + (" **Smoke run (--limit): not the benchmark.**" if payload["limit"] else ""),
        "",
        "| Split | Test queries | NDCG@10 base | NDCG@10 fine-tuned | Delta | % | "
        "Wilcoxon p | 95% CI of delta | MRR@10 | Accuracy@1 | Recall@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        metrics = run["metrics"]["metrics"]
        ndcg, sig = metrics["ndcg@10"], run["metrics"]["significance"]
        lines.append(
            f"| by {run['split_by']} | {run['test_queries']:,} | "
            f"{ndcg['baseline']:.4f} | {ndcg['fine_tuned']:.4f} | "
            f"{ndcg['delta']:+.4f} | {fmt_pct(ndcg['pct_change'])} | "
            f"{fmt_p(sig['wilcoxon_p_value'])} | {fmt_ci(sig)} | "
            f"{fmt_change(metrics['mrr@10'])} | {fmt_change(metrics['accuracy@1'])} | "
            f"{fmt_change(metrics['recall@10'])} |"
        )
    lines += [
        "",
        "| Split | Train pairs | Steps | Training wall (s) | Pairs/s | "
        "Evaluation wall (s) | Test products seen in training |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        t = run["training"]
        lines.append(
            f"| by {run['split_by']} | {run['train_pairs']:,} | {t['steps']} | "
            f"{t['wall_time_s']:.1f} | {t['pairs_per_s']:.1f} | "
            f"{run['evaluation_wall_s']:.1f} | "
            f"{run['test_products_seen_in_training']:,} of {run['test_queries']:,} "
            "queries |"
        )
    lines += [
        "",
        "MRR@10, Accuracy@1 and Recall@10: base → fine-tuned. Offline queries reuse "
        "the catalog's words, so absolute values are higher than with LLM-written "
        "or real queries.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args(__doc__, "keep the first N products").parse_args()
    started = time.perf_counter()
    device, base_model = setup(args.device)
    params = load_params("data_generation") | {
        "provider": "offline",
        "columns": AMAZON_COLUMNS,
        "max_products": args.limit,
    }
    raw = pd.read_csv(AMAZON, dtype=str, keep_default_na=False)
    products, product_report = prepare_products(raw, params)
    generated, queries, query_report = generate_queries(products, params)
    runs = [
        run_split(
            split_by,
            queries=queries,
            products=products,
            base_model=base_model,
            generation_params=params,
            device=device,
        )
        for split_by in SPLITS
    ]
    training = load_params("training") | REFERENCE_RECIPE
    payload = {
        "benchmark": NAME,
        "limit": args.limit,
        "environment": environment(device),
        "products": len(products),
        "product_report": product_report,
        "generated_queries": len(generated),
        "kept_queries": len(queries),
        "query_report": query_report,
        "training_parameters": {
            key: training[key]
            for key in ("epochs", "batch_size", "learning_rate", "warmup_ratio", "loss")
        },
        "runs": runs,
        "wall_time_s": time.perf_counter() - started,
    }
    write_results(args.out, NAME, payload, markdown(payload))


if __name__ == "__main__":
    main()
