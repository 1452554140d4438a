"""Does a reranker we train ourselves lift hybrid search on real queries?

The Home Depot protocol of bench/home_depot.py (1,000 real queries with graded
judgments over 17,936 titles; the same offline queries, search log, leakage
guard and split). For each training source (offline queries only; offline
queries + search log):

- the embedding model fine-tuned on that source (from --models DIR, where
  bench/home_depot.py --models DIR left it, else trained here), its search
  table and the fusion `tune_search_options` chose for it on the validation
  queries: hybrid search as the pipeline deploys it;
- the reranker `train_reranker` trains on the same source's pairs, with
  negatives mined from that model's lanes (conf/base/parameters_reranker.yml),
  and its weight against the hybrid score, which `tune_reranker` chooses on
  the validation queries;
- graded NDCG@10 of hybrid against hybrid + rerank (the top `top_n` hits
  reordered by `reranked_search`, the code behind /search) on the real
  queries, with the Wilcoxon p-value and bootstrap 95% CI: the reranker in
  PyTorch with its tuned weight, and its int8 ONNX export with the same
  weight (what `SEARCH_ONNX_VARIANT=int8` serves).

Then the reranking latency alone (the cross-encoder over the hits' title and
brand, without the database or the query embedding) for N = 20, 50, 100
candidates over 100 real queries, on this machine's cores, in PyTorch and
with ONNX Runtime (fp32 and int8).

Writes bench/results/rerank.{json,md}.

    .venv/bin/python bench/rerank.py [--device cpu|cuda] [--limit N]
        [--sources offline,both] [--models DIR] [--positive-min R]
        [--negative-max R] [--max-pairs N]
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from common import (
    BASE_MODEL,
    ROOT,
    environment,
    fmt_ci,
    fmt_p,
    load_params,
    parse_args,
    provenance,
    scratch_database,
    setup,
    write_results,
)
from home_depot import (
    SEED,
    SOURCES,
    add_log_thresholds,
    build_table,
    export,
    generation_params,
    limit_to,
    paired,
    trained_model,
    training_sets,
)

from product_search import metrics as m
from product_search.datasets import CrossEncoderModelDataset, model_id
from product_search.onnx_export import export_onnx
from product_search.pipelines.data_generation.products import prepare_products
from product_search.pipelines.evaluation.tuning import (
    tune_reranker,
    tune_search_options,
)
from product_search.pipelines.training.pairs import logged_first
from product_search.pipelines.training.reranker import train_reranker
from product_search.scoring import build_evaluation_set, search_run
from product_search.search.index import unit_vectors
from product_search.search.onnx import OnnxReranker
from product_search.search.rerank import Reranker, rerank

NAME = "rerank"
LATENCY_QUERIES = 100
LATENCY_DEPTHS = (20, 50, 100)


# Parameters of how the trained reranker is served, not of its training.
SERVING_PARAMETERS = {"top_n", "min_gain", "weight", "tuning", "serving"}


def _training_part(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in SERVING_PARAMETERS}


def catalog_head() -> dict | None:
    """The new head the pipeline's reranker starts from (catalog: reranker_base)."""
    with open(ROOT / "conf" / "base" / "catalog.yml") as f:
        return yaml.safe_load(f)["reranker_base"].get("head")


def trained_reranker(
    source: str, data, *, products, model, params: dict, search: dict,
    keep: Path | None, head: dict | None,
):  # fmt: skip
    """The reranker trained on ``source`` and its history, from ``keep`` when
    an earlier run left them there with the same parameters."""
    folder = keep / f"{source}-reranker" if keep else None
    if folder and (folder / "history.json").exists():
        history = json.loads((folder / "history.json").read_text())
        same = _training_part(history["parameters"]) == _training_part(
            json.loads(json.dumps(params))
        )
        same = same and history.get("head") == head
        if same and history["pairs"]["input_pairs"] == len(data[0]):
            print(f"Reusing the reranker trained on {SOURCES[source]} in {folder}")
            loaded = CrossEncoderModelDataset(
                model_name_or_path=str(folder), load_args={"device": params["device"]}
            ).load()
            return loaded, history
    base = CrossEncoderModelDataset(model_name_or_path=BASE_MODEL, head=head).load()
    pairs, negatives = data
    print(f"Training the reranker on {SOURCES[source]}: {len(pairs):,} pairs")
    reranker, history = train_reranker(
        pairs, negatives, products, fine_tuned_model=model, reranker_base=base,
        params=params, search_params=search,
    )  # fmt: skip
    history["head"] = head
    if folder:
        CrossEncoderModelDataset(model_name_or_path=str(folder)).save(reranker)
        (folder / "history.json").write_text(json.dumps(history))
    return reranker, history


def per_query_ndcg(table, queries, vectors, qrels, options, *, reranker=None) -> dict:
    run = search_run(
        table, queries, vectors, mode="hybrid", k=10, options=options,
        reranker=reranker,
    )  # fmt: skip
    return m.graded_metrics(qrels, run, ["ndcg@10"])["ndcg@10"]


def latency(
    table, rerankers: dict[str, Reranker], queries, vectors, options
) -> list[dict]:
    """p50/p95 of reranking N hits alone (one call per query, as /search
    does), for each backend of ``rerankers``."""
    rows = []
    items = list(queries.items())[:LATENCY_QUERIES]
    for depth in LATENCY_DEPTHS:
        hits = [
            table.search(text, vectors[i], depth, mode="hybrid", options=options)
            for i, (_, text) in enumerate(items)
        ]
        for backend, reranker in rerankers.items():
            timings = []
            for (_, text), found in zip(items, hits, strict=True):
                started = time.perf_counter()
                rerank(reranker.model, text, found, top_n=depth,
                       columns=reranker.columns, weight=reranker.weight)  # fmt: skip
                timings.append(1000 * (time.perf_counter() - started))
            rows.append(
                {
                    "backend": backend,
                    "candidates": depth,
                    "queries": len(items),
                    "p50_ms": float(np.percentile(timings, 50)),
                    "p95_ms": float(np.percentile(timings, 95)),
                }
            )
            print(f"rerank {depth} candidates, {backend}: p50 "
                  f"{rows[-1]['p50_ms']:.1f} ms, p95 {rows[-1]['p95_ms']:.1f} ms")  # fmt: skip
    return rows


def _head_words(head: dict | None) -> str:
    if head is None:
        return "all 6 layers, BERT's pooled first token"
    layers = head.get("layers")
    return (
        f"{'the first ' + str(layers) if layers else 'all 6'} layers, "
        f"{head.get('pooling', 'mean')} pooling"
    )


def _log_words(search_log: dict | None) -> str:
    if not search_log:
        return ""
    negatives = search_log["negative_max"]
    return f"Search log: relevance ≥ {search_log['positive_min']:g} makes a pair" + (
        f", ≤ {negatives:g} a logged negative. " if negatives is not None else ". "
    )


def markdown(payload: dict) -> str:
    lines = [
        "# Reranking Home Depot's real queries with a cross-encoder we train",
        "",
        f"{payload['data']['real_queries']:,} real queries with graded judgments "
        f"over {payload['data']['corpus_products']:,} titles (the protocol of "
        "bench/home_depot.py). Hybrid: the fine-tuned model's table with the "
        "fusion tuned for it on the validation queries; + rerank: its top "
        f"{payload['reranker']['top_n']} hits reordered by the reranker trained "
        f"on the same source ({payload['recipe']}; "
        + _head_words(payload["reranker"].get("head"))
        + (
            f"; each on at most {payload['max_pairs']:,} of its source's pairs, "
            "the search log's first, the rest drawn with the seed"
            if payload["max_pairs"]
            else ""
        )
        + "), its score blended with the hybrid score by the weight "
        "`tune_reranker` chose on the validation queries. "
        + _log_words(payload.get("search_log"))
        + f"{provenance(payload)}",
        "",
        "| Trained on | Examples (pos / hard / random / logged) | Weight | "
        "Hybrid NDCG@10 | Hybrid + rerank | Δ | Wilcoxon p | 95% CI | "
        "int8 ONNX: Δ (p) | Training (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for source, result in payload["sources"].items():
        gain, counts = result["rerank"], result["reranker"]["examples"]
        int8 = result["rerank_int8"]
        lines.append(
            f"| {SOURCES[source]} | {counts['positive']:,} / {counts['hard']:,} / "
            f"{counts['random']:,} / {counts['logged']:,} | {result['weight']} | "
            f"{gain['baseline']:.4f} | {gain['value']:.4f} | {gain['delta']:+.4f} | "
            f"{fmt_p(gain['wilcoxon_p_value'])} | {fmt_ci(gain)} | "
            f"{int8['delta']:+.4f} ({fmt_p(int8['wilcoxon_p_value'])}) | "
            f"{result['reranker']['wall_time_s']:.0f} |"
        )
    lines += [
        "",
        f"Reranking latency alone (title and brand of each hit, max_length "
        f"{payload['reranker']['max_length']} tokens, one call per query in "
        f"batches of 16, {LATENCY_QUERIES} real queries), reranker trained on "
        f"{SOURCES[payload['latency_source']]}:",
        "",
        "| Candidates | Backend | p50 ms | p95 ms |",
        "|---|---|---|---|",
        *(
            f"| {row['candidates']} | {row['backend']} | {row['p50_ms']:.1f} | "
            f"{row['p95_ms']:.1f} |"
            for row in payload["latency"]
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:  # noqa: PLR0915
    parser = parse_args(__doc__, "keep N real queries (CPU smoke run)")
    parser.add_argument("--sources", default="offline,both")
    parser.add_argument(
        "--models", type=Path, default=None,
        help="where bench/home_depot.py --models kept its models; the rerankers "
        "are kept beside them",
    )  # fmt: skip
    add_log_thresholds(parser, positive_min=3)
    parser.add_argument(
        "--max-pairs", type=int, default=None,
        help="train each reranker on N of its source's pairs: the search log's "
        "first, then drawn with the seed (CPU: about 4 examples per pair, "
        "~0.4 s per batch of 32 with 3 layers)",
    )  # fmt: skip
    parser.add_argument(
        "--head", type=json.loads, default=None,
        help='the reranker\'s new head, e.g. \'{"pooling": "mean", "layers": 3}\' '
        "(default: the catalog's reranker_base)",
    )  # fmt: skip
    parser.add_argument(
        "--name", default=NAME, help="the results' file name (default: rerank)"
    )
    args = parser.parse_args()
    head = args.head if args.head is not None else catalog_head()
    started = time.perf_counter()
    device, base_model = setup(args.device)
    with tempfile.TemporaryDirectory(prefix="rerank-") as tmp:
        data = export(Path(tmp))
    if args.limit:
        data = limit_to(args.limit, data)
    params = generation_params(args)
    products, _ = prepare_products(data["products"], params)
    sets, validation, test, _ = training_sets(data, products, params, None)
    eval_params = load_params("evaluation")
    search_params = load_params("search")
    reranker_params = load_params("reranker") | {"device": device}
    training = load_params("training") | {"device": device}
    judged = build_evaluation_set(
        products, test.drop(columns="source"), data["queries"], data["qrels"]
    ).judged
    queries, qrels = judged.queries, judged.qrels

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rerank-pg-") as tmp:
        url = scratch_database(Path(tmp))
        for source in args.sources.split(","):
            model, _ = trained_model(
                source, sets[source], products=products, base_model=base_model,
                training=training, keep=args.models,
            )  # fmt: skip
            model = model.to(device)
            table = build_table(url, f"rr_{source}", products, model)
            tuned = tune_search_options(
                table, model, validation, search_params, eval_params
            )
            options = tuned.options
            pairs, negatives = sets[source]
            if args.max_pairs and args.max_pairs < len(pairs):
                shuffled = pairs.sample(frac=1.0, random_state=SEED)
                pairs = logged_first(shuffled).head(args.max_pairs)
            model_reranker, history = trained_reranker(
                source, (pairs, negatives), products=products, model=model,
                params=reranker_params, search=search_params, keep=args.models,
                head=head,
            )  # fmt: skip
            tuned_weight = tune_reranker(
                table=table, model=model, reranker=model_reranker,
                reranker_history=history, search_options=tuned,
                validation_queries=validation, reranker_params=reranker_params,
                params=eval_params,
            )  # fmt: skip
            reranker = Reranker(
                model=model_reranker.to(device),
                model_id=model_id(model_reranker),
                top_n=int(reranker_params["top_n"]),
                columns=tuple(reranker_params["text_columns"]),
                weight=tuned_weight.weight,
            )
            onnx = export_onnx(model_reranker, reranker.model_id, int8=True)
            backends = {
                "torch": reranker,
                "onnx fp32": replace(reranker, model=OnnxReranker(onnx, "fp32")),
                "onnx int8": replace(reranker, model=OnnxReranker(onnx, "int8")),
            }
            vectors = unit_vectors(model, list(queries.values()), 64)
            hybrid = per_query_ndcg(table, queries, vectors, qrels, options)
            step = time.perf_counter()
            reranked = per_query_ndcg(
                table, queries, vectors, qrels, options, reranker=reranker
            )
            rerank_seconds = time.perf_counter() - step
            reranked_int8 = per_query_ndcg(
                table, queries, vectors, qrels, options,
                reranker=backends["onnx int8"],
            )  # fmt: skip
            results[source] = {
                "fusion": tuned.options.model_dump(),
                "reranker": {
                    k: history[k]
                    for k in (
                        "examples",
                        "steps",
                        "train_loss",
                        "mining_time_s",
                        "wall_time_s",
                    )
                },  # fmt: skip
                "weight": tuned_weight.weight,
                "weight_tuning": tuned_weight,
                "rerank": paired(hybrid, reranked),
                "rerank_int8": paired(hybrid, reranked_int8),
                "rerank_all_queries_s": rerank_seconds,
            }
            print(source, results[source]["rerank"], results[source]["rerank_int8"])
        latency_rows = latency(table, backends, queries, vectors, options)
    payload = {
        "benchmark": NAME,
        "limit": args.limit,
        "max_pairs": args.max_pairs,
        "search_log": {
            k: params["search_logs"][k] for k in ("positive_min", "negative_max")
        },
        "environment": environment(device),
        "recipe": (
            f"{reranker_params['epochs']} epoch, batch {reranker_params['batch_size']}, "
            f"lr {reranker_params['learning_rate']}, binary cross-entropy, per "
            f"positive {reranker_params['negatives']['hard']} hard and "
            f"{reranker_params['negatives']['random']} random negatives"
            + (
                ", its layers started from the fine-tuned model's"
                if reranker_params.get("warm_start")
                else ""
            )
        ),
        "data": {"corpus_products": len(products), "real_queries": len(queries)},
        "reranker": {
            k: reranker_params[k] for k in ("top_n", "text_columns", "max_length")
        }
        | {"head": head},  # fmt: skip
        "sources": results,
        "latency_source": source,
        "latency": latency_rows,
        "total_s": time.perf_counter() - started,
    }
    write_results(args.out, args.name, payload, markdown(payload))


if __name__ == "__main__":
    main()
