"""Nodes of the evaluation pipeline: the base and the fine-tuned model are scored
on the same held-out queries (and on human judgments when there are some), then
compared with a paired test, a report and a chart."""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sentence_transformers import CrossEncoder, SentenceTransformer

from product_search import metrics as m
from product_search.datasets import model_id
from product_search.errors import UserError
from product_search.search import fusion
from product_search.search.index import unit_vectors
from product_search.search.onnx import OnnxEncoder, OnnxReranker, export_onnx
from product_search.search.rerank import (
    Reranker,
    blended_order,
    rerank_scores,
    reranked_search,
)
from product_search.search.table import Mode, SearchOptions, SearchTable
from product_search.search.tuning import Evidence, judging_sources
from product_search.search.tuning import choose as choose_on_evidence
from product_search.search.tuning import explain as explain_choice

from .report import fusion_label, plot_metrics_chart, render_report

logger = logging.getLogger(__name__)


def _require_columns(frame: pd.DataFrame, name: str, columns: list[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise UserError(
            f"`{name}` lacks the column(s) {missing}; it has {list(frame.columns)}."
        )


def _first_duplicates(values: pd.Series) -> list[str]:
    return values[values.duplicated()].head(3).tolist()


def _judgments(
    judged_queries: pd.DataFrame,
    relevance_judgments: pd.DataFrame,
    product_ids: set[str],
) -> dict[str, Any]:
    """Check the human judgments and keep the queries that have a relevant
    product; empty when the user supplied none."""
    if judged_queries.empty and relevance_judgments.empty:
        return {}
    if judged_queries.empty or relevance_judgments.empty:
        raise UserError(
            f"Human judgments need both files: `judged_queries` has "
            f"{len(judged_queries)} rows and `relevance_judgments` "
            f"{len(relevance_judgments)}."
        )
    _require_columns(judged_queries, "judged_queries", ["query_id", "query"])
    _require_columns(
        relevance_judgments,
        "relevance_judgments",
        ["query_id", "product_id", "relevance"],
    )
    queries = judged_queries.assign(
        query_id=judged_queries["query_id"].astype(str),
        query=judged_queries["query"].fillna("").astype(str).str.strip(),
    )
    qrels = relevance_judgments.assign(
        query_id=relevance_judgments["query_id"].astype(str),
        product_id=relevance_judgments["product_id"].astype(str),
        relevance=pd.to_numeric(relevance_judgments["relevance"], errors="coerce"),
    )
    relevance = qrels["relevance"]
    checks = {
        "duplicate query ids in judged_queries": (
            queries["query_id"],
            queries["query_id"].duplicated(),
        ),
        "empty queries": (queries["query_id"], queries["query"] == ""),
        "relevance that is not a whole number >= 0": (
            relevance_judgments["relevance"],
            relevance.isna() | (relevance < 0) | (relevance % 1 != 0),
        ),
        "judgments of unknown query ids": (
            qrels["query_id"],
            ~qrels["query_id"].isin(queries["query_id"]),
        ),
        "repeated (query_id, product_id) judgments": (
            qrels["query_id"],
            qrels.duplicated(["query_id", "product_id"]),
        ),
    }
    problems = [
        f"{problem} (e.g. {values[failed].head(3).tolist()})"
        for problem, (values, failed) in checks.items()
        if failed.any()
    ]
    if problems:
        raise UserError(f"The human judgments have {'; '.join(problems)}.")
    has_relevant = qrels.groupby("query_id")["relevance"].max() > 0
    judged = set(qrels["query_id"])
    without_judgments = queries.loc[~queries["query_id"].isin(judged), "query_id"]
    without_relevant = has_relevant.index[~has_relevant]
    kept = queries[queries["query_id"].isin(has_relevant.index[has_relevant])]
    if kept.empty:
        raise UserError(
            "No judged query has a product judged relevant (relevance > 0), so no "
            "real-query metric can be computed."
        )
    kept_qrels = qrels[qrels["query_id"].isin(kept["query_id"])]
    not_in_catalog = int((~kept_qrels["product_id"].isin(product_ids)).sum())
    if len(without_judgments) or len(without_relevant):
        logger.warning(
            "Real-query metrics skip %d judged queries without any judgment and %d "
            "whose judged products are all irrelevant",
            len(without_judgments), len(without_relevant),
        )  # fmt: skip
    if not_in_catalog:
        # Kept: no model can retrieve them, which lowers both models' scores alike.
        logger.warning(
            "%d judgments name products that are not in the catalog", not_in_catalog
        )
    qrels_dict: dict[str, dict[str, int]] = {}
    for row in kept_qrels.itertuples(index=False):
        qrels_dict.setdefault(row.query_id, {})[row.product_id] = int(row.relevance)
    return {
        "queries": dict(zip(kept["query_id"], kept["query"], strict=True)),
        "qrels": qrels_dict,
        "counts": {
            "queries": len(kept),
            "judgments": len(kept_qrels),
            "skipped_without_judgments": len(without_judgments),
            "skipped_without_relevant": len(without_relevant),
            "judged_products_not_in_catalog": not_in_catalog,
        },
    }


def build_evaluation_set(
    products: pd.DataFrame,
    test_queries: pd.DataFrame,
    judged_queries: pd.DataFrame,
    relevance_judgments: pd.DataFrame,
) -> dict[str, Any]:
    """Check the inputs and gather what both models are scored on: the product
    corpus, the held-out queries with their product, and the judged real queries
    (an empty ``judged`` when there are none)."""
    _require_columns(products, "products", ["product_id", "title", "text"])
    _require_columns(test_queries, "test_queries", ["query_id", "query", "product_id"])
    if products.empty:
        raise UserError("`products` is empty: there is nothing to search.")
    if test_queries.empty:
        raise UserError(
            "`test_queries` is empty: run the data_generation pipeline first."
        )
    product_ids = products["product_id"].astype(str)
    queries = test_queries.assign(
        query_id=test_queries["query_id"].astype(str),
        product_id=test_queries["product_id"].astype(str),
        query=test_queries["query"].fillna("").astype(str),
    )
    if product_ids.duplicated().any():
        raise UserError(
            f"`products` repeats product ids, e.g. {_first_duplicates(product_ids)}."
        )
    if queries["query_id"].duplicated().any():
        raise UserError(
            "`test_queries` repeats query ids, e.g. "
            f"{_first_duplicates(queries['query_id'])}."
        )
    unknown = queries.loc[~queries["product_id"].isin(product_ids), "product_id"]
    if len(unknown):
        raise UserError(
            f"{len(unknown)} test queries point to products that are not in "
            f"`products` (e.g. {unknown.head(3).tolist()}): were they made from "
            "another catalog?"
        )
    return {
        "corpus": {
            "product_id": product_ids.tolist(),
            "title": products["title"].fillna("").astype(str).tolist(),
            "text": products["text"].fillna("").astype(str).tolist(),
        },
        "test_queries": {
            column: queries[column].tolist()
            for column in ("query_id", "query", "product_id")
        },
        "judged": _judgments(judged_queries, relevance_judgments, set(product_ids)),
    }


def _real_query_metrics(
    model: SentenceTransformer,
    judged: dict[str, Any],
    product_ids: list[str],
    embeddings: torch.Tensor,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Graded metrics of the judged queries, retrieved over the whole corpus."""
    names = list(params["real_query_metrics"])
    query_ids = list(judged["queries"])
    hits = m.top_k(
        model,
        [judged["queries"][qid] for qid in query_ids],
        embeddings,
        k=max(m.parse_metric(name)[1] for name in names),
        batch_size=int(params["batch_size"]),
    )
    run = {
        qid: {product_ids[row]: score for row, score in ranked}
        for qid, ranked in zip(query_ids, hits, strict=True)
    }
    per_query = m.graded_metrics(judged["qrels"], run, names)
    return {
        "metrics": {
            name: float(np.mean(list(per_query[name].values()))) for name in names
        },
        "per_query": per_query,
    }


def _search_examples(
    model: SentenceTransformer,
    corpus: dict[str, list[str]],
    embeddings: torch.Tensor,
    params: dict[str, Any],
) -> list[dict[str, Any]]:
    """The top products of each sample query, with their titles and scores."""
    samples = list(params.get("sample_queries") or [])
    top = m.top_k(
        model,
        samples,
        embeddings,
        int(params["top_k_examples"]),
        int(params["batch_size"]),
    )
    return [
        {
            "query": query,
            "results": [
                {
                    "product_id": corpus["product_id"][row],
                    "title": corpus["title"][row],
                    "score": score,
                }
                for row, score in ranked
            ],
        }
        for query, ranked in zip(samples, top, strict=True)
    ]


def evaluate_model(
    model: SentenceTransformer, evaluation_set: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """Score one model: binary metrics and per-query NDCG on the held-out queries,
    graded metrics on the judged queries, and the top products of each sample
    query. The corpus is encoded once and used for all three."""
    batch_size = int(params["batch_size"])
    corpus, tests = evaluation_set["corpus"], evaluation_set["test_queries"]
    primary = params["primary_metric"]
    _, primary_k = m.parse_metric(primary)
    embeddings = m.encode_corpus(model, corpus["text"], batch_size)
    binary = m.binary_ir_metrics(
        model,
        queries=dict(zip(tests["query_id"], tests["query"], strict=True)),
        corpus=dict(zip(corpus["product_id"], corpus["text"], strict=True)),
        corpus_embeddings=embeddings,
        relevant_docs={
            qid: {pid}
            for qid, pid in zip(tests["query_id"], tests["product_id"], strict=True)
        },
        cutoffs=params["cutoffs"],
        primary_k=primary_k,
        batch_size=batch_size,
    )
    judged = evaluation_set["judged"]
    identifier = model_id(model)
    logger.info(
        "%s: %s = %.4f on %d test queries",
        identifier, primary, binary.metrics[primary], len(tests["query_id"]),
    )  # fmt: skip
    return {
        "model_id": identifier,
        "metrics": binary.metrics,
        "per_query_ndcg": binary.per_query_ndcg,
        "real_queries": (
            _real_query_metrics(model, judged, corpus["product_id"], embeddings, params)
            if judged
            else {}
        ),
        "examples": _search_examples(model, corpus, embeddings, params),
    }


def evaluate_onnx(
    model: SentenceTransformer,
    evaluation_set: dict[str, Any],
    torch_evaluation: dict[str, Any],
    params: dict[str, Any],
    onnx: dict[str, Any],
) -> dict[str, Any]:
    """Score ``model`` exported to ONNX (fp32, and int8 when ``onnx.int8``)
    with the code that scored it in torch (``torch_evaluation``): what the
    service's ONNX backend changes in each metric. ``{}`` when ``onnx.evaluate``
    is false."""
    if not onnx.get("evaluate", True):
        return {}
    export = export_onnx(
        model, model_id(model), int8=bool(onnx.get("int8")), opset=int(onnx["opset"])
    )
    variants = {}
    for variant in export.graphs:
        scored = evaluate_model(
            OnnxEncoder(export, variant, onnx.get("threads")), evaluation_set, params
        )
        variants[variant] = {
            "metrics": m.compare(torch_evaluation["metrics"], scored["metrics"]),
            "real_queries": (
                m.compare(
                    torch_evaluation["real_queries"]["metrics"],
                    scored["real_queries"]["metrics"],
                )
                if scored["real_queries"]
                else {}
            ),
        }
        primary = params["primary_metric"]
        change = variants[variant]["metrics"][primary]
        logger.info(
            "ONNX %s: %s = %.4f (torch %.4f, %+.5f)",
            variant, primary, change["fine_tuned"], change["baseline"], change["delta"],
        )  # fmt: skip
    return {"model": export.model_id, "variants": variants}


def _statistics(params: dict[str, Any], promotion: dict[str, Any]) -> dict[str, Any]:
    """How every paired comparison is tested: the gate's p-value, the
    evaluation's bootstrap."""
    return {
        "alpha": float(promotion["p_value"]),
        "samples": int(params["bootstrap_samples"]),
        "seed": int(params["seed"]),
    }


def promotion_verdict(
    baseline_evaluation: dict[str, Any],
    candidate_evaluation: dict[str, Any],
    params: dict[str, Any],
    promotion: dict[str, Any],
) -> dict[str, Any]:
    """May the candidate replace the baseline (the serving model)? Judged on
    ``promotion.metric`` over the real judgments when there are some, else over
    the held-out test queries (see :func:`product_search.metrics.promotion_verdict`)."""
    metric = promotion["metric"]
    real = bool(baseline_evaluation["real_queries"])
    if real:
        per_query = baseline_evaluation["real_queries"]["per_query"]
        candidate = candidate_evaluation["real_queries"]["per_query"]
    else:
        per_query = {params["primary_metric"]: baseline_evaluation["per_query_ndcg"]}
        candidate = {params["primary_metric"]: candidate_evaluation["per_query_ndcg"]}
    if metric not in per_query:
        raise UserError(
            f"promotion.metric '{metric}' is not measured per query on the "
            f"{'real' if real else 'test'} queries; use one of {list(per_query)} "
            "(evaluation.real_query_metrics, or evaluation.primary_metric without "
            "judgments)."
        )
    return m.promotion_verdict(
        per_query[metric],
        candidate[metric],
        metric=metric,
        queries="real queries" if real else "held-out test queries",
        models=(baseline_evaluation["model_id"], candidate_evaluation["model_id"]),
        min_gain=promotion.get("min_gain"),
        **_statistics(params, promotion),
    )


def compare_models(
    *,
    baseline_evaluation: dict[str, Any],
    fine_tuned_evaluation: dict[str, Any],
    search_mode_metrics: dict[str, Any],
    evaluation_set: dict[str, Any],
    params: dict[str, Any],
    promotion: dict[str, Any],
    onnx_metrics: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every metric of both models with its change, whether the primary metric's
    change is significant, the metrics of each search mode, what the ONNX
    export changes (``onnx_metrics``), the verdict of the promotion gate on the
    fine-tuned model (``promotion``), and the per-query primary metric of both
    models."""
    primary = params["primary_metric"]
    base_pq = baseline_evaluation["per_query_ndcg"]
    tuned_pq = fine_tuned_evaluation["per_query_ndcg"]
    metrics: dict[str, Any] = {
        "primary_metric": primary,
        "models": {
            "baseline": baseline_evaluation["model_id"],
            "fine_tuned": fine_tuned_evaluation["model_id"],
        },
        "corpus_size": len(evaluation_set["corpus"]["product_id"]),
        "test_queries": len(evaluation_set["test_queries"]["query_id"]),
        "metrics": m.compare(
            baseline_evaluation["metrics"], fine_tuned_evaluation["metrics"]
        ),
        "significance": {"metric": primary}
        | m.paired_comparison(base_pq, tuned_pq, **_statistics(params, promotion)),
        "search_modes": search_mode_metrics,
        "onnx": onnx_metrics or {},
    }
    judged = evaluation_set["judged"]
    if judged:
        base_real = baseline_evaluation["real_queries"]
        tuned_real = fine_tuned_evaluation["real_queries"]
        headline = params["real_query_metrics"][0]
        metrics["real_queries"] = judged["counts"] | {
            "metrics": m.compare(base_real["metrics"], tuned_real["metrics"]),
            "significance": {"metric": headline}
            | m.paired_comparison(
                base_real["per_query"][headline],
                tuned_real["per_query"][headline],
                **_statistics(params, promotion),
            ),
        }
    metrics["promotion"] = promotion_verdict(
        baseline_evaluation, fine_tuned_evaluation, params, promotion
    )

    tests = evaluation_set["test_queries"]
    per_query = pd.DataFrame(tests)
    per_query[f"{primary}_baseline"] = per_query["query_id"].map(base_pq)
    per_query[f"{primary}_fine_tuned"] = per_query["query_id"].map(tuned_pq)
    per_query["delta"] = (
        per_query[f"{primary}_fine_tuned"] - per_query[f"{primary}_baseline"]
    )
    change = metrics["metrics"][primary]
    logger.info(
        "%s: %.4f -> %.4f (%+.4f), Wilcoxon p = %s",
        primary, change["baseline"], change["fine_tuned"], change["delta"],
        metrics["significance"]["wilcoxon_p_value"],
    )  # fmt: skip
    return metrics, per_query


def _metric_key(path: tuple[str, ...]) -> str:
    # MLflow keys allow letters, digits and _ - . / and spaces; "ndcg@10" does not.
    key = ".".join(path).replace("@", "_at_")
    return re.sub(r"[^\w\-./ ]", "_", key)


def tracked_metrics(
    metrics: dict[str, Any], training_history: dict[str, Any]
) -> dict[str, list[dict[str, float]]]:
    """Every number of ``metrics`` (each model, search mode, real-query and
    ONNX figure, p-values, counts) as an MLflow metric named by its path,
    e.g. ``metrics.ndcg_at_10.fine_tuned``, and the training loss by step as
    ``training.loss``: the input of kedro-mlflow's metrics dataset."""
    tracked: dict[str, list[dict[str, float]]] = {}

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, str(key)))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if np.isfinite(value):
                tracked[_metric_key(path)] = [{"value": float(value), "step": 0}]

    walk(metrics, ())
    tracked["training.loss"] = [
        {"value": float(entry["loss"]), "step": int(entry["step"])}
        for entry in training_history.get("loss_by_step", [])
    ]
    return tracked


def write_report(
    *,
    metrics: dict[str, Any],
    baseline_evaluation: dict[str, Any],
    fine_tuned_evaluation: dict[str, Any],
    training_history: dict[str, Any],
    generated_queries: pd.DataFrame,
    data_quality: dict[str, Any],
    split: dict[str, Any],
    params: dict[str, Any],
) -> str:
    """The evaluation report in Markdown, for a search lead to read and forward."""
    return render_report(
        metrics=metrics,
        examples=(baseline_evaluation["examples"], fine_tuned_evaluation["examples"]),
        training_history=training_history,
        generated_queries=generated_queries,
        data_quality=data_quality,
        split=split,
        params=params,
    )


def plot_metrics(metrics: dict[str, Any]) -> Figure:
    """Grouped bars of every metric, base model beside fine-tuned model."""
    return plot_metrics_chart(metrics)


def search_run(
    table: SearchTable,
    queries: dict[str, str],
    vectors: np.ndarray | None,
    *,
    mode: Mode,
    k: int,
    options: SearchOptions,
    reranker: Reranker | None = None,
) -> dict[str, dict[str, float]]:
    """Each query (with its vector, row for row; None for lexical search)
    through :func:`reranked_search`, the code behind ``/search``:
    ``{query_id: {product_id: score}}`` in the served order."""
    rows = [None] * len(queries) if vectors is None else list(vectors)
    return {
        query_id: m.ranked_run(
            [
                hit.product_id
                for hit in reranked_search(
                    table, reranker, text, vector, k, mode=mode, options=options
                )
            ]
        )  # fmt: skip
        for (query_id, text), vector in zip(queries.items(), rows, strict=True)
    }


def search_mode_runs(
    tables: dict[str, SearchTable],
    models: dict[str, SentenceTransformer],
    queries: dict[str, str],
    *,
    k: int,
    options: dict[str, SearchOptions],
    batch_size: int = 64,
    rerankers: dict[str, Reranker] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """The run of every search mode: lexical, then dense and hybrid for each
    model (``tables``, ``models`` and ``options``, each model's fusion, share
    their keys, e.g. ``base``), and hybrid reranked for each model of
    ``rerankers``."""
    first = next(iter(tables))
    runs = {
        "lexical": search_run(
            tables[first], queries, None, mode="lexical", k=k, options=options[first]
        )
    }
    for name, model in models.items():
        vectors = unit_vectors(model, list(queries.values()), batch_size)
        for mode in ("dense", "hybrid"):
            runs[f"{mode}_{name}"] = search_run(
                tables[name], queries, vectors, mode=mode, k=k, options=options[name]
            )
        if name in (rerankers or {}):
            runs[f"hybrid_rerank_{name}"] = search_run(
                tables[name], queries, vectors, mode="hybrid", k=k,
                options=options[name], reranker=rerankers[name],
            )  # fmt: skip
    return runs


def _validation_sets(
    validation_queries: pd.DataFrame,
) -> dict[str, tuple[dict[str, str], dict[str, dict[str, int]]]]:
    """The validation queries by source (``log``, ``generated``): each set's
    ``{query_id: query}`` and its binary judgments."""
    frame = validation_queries.astype({"query_id": str, "product_id": str})
    return {
        source: (
            rows.drop_duplicates("query_id").set_index("query_id")["query"].to_dict(),
            {
                qid: dict.fromkeys(group["product_id"], 1)
                for qid, group in rows.groupby("query_id")
            },
        )
        for source, rows in frame.groupby("source")
    }


def tune_search_options(
    table: SearchTable,
    model: SentenceTransformer,
    validation_queries: pd.DataFrame,
    search_params: dict[str, Any],
    params: dict[str, Any],
    *,
    promotion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fusion hybrid search uses with ``model``, chosen on the validation
    queries (held out of its training) through its search table: the
    project's ``search.options``, unless a fusion of ``search.tuning.grid``
    beats it there by more than chance (see :func:`fusion.choose`, with the
    promotion gate's p-value). ``options`` of the result is what the
    deployment records and ``/search`` uses; ``reason`` says why."""
    default = SearchOptions(**search_params["options"])
    tuning = search_params.get("tuning") or {}
    result = {"model": model_id(model), "options": default.model_dump()}
    _require_columns(
        validation_queries, "validation_queries",
        ["query_id", "query", "product_id", "source"],
    )  # fmt: skip
    why = (
        "search.tuning.enabled is false" if not tuning.get("enabled", False)
        else "there are no validation queries" if validation_queries.empty
        else None
    )  # fmt: skip
    if why:
        logger.info("Hybrid search keeps the project's fusion for %s: %s.",
                    result["model"], why)  # fmt: skip
        return result | {"tuned": False, "reason": why}
    sets = _validation_sets(validation_queries)
    query_lanes, qrels = {}, {}
    for source, (queries, source_qrels) in sets.items():
        vectors = unit_vectors(model, list(queries.values()), params["batch_size"])
        query_lanes[source] = fusion.lanes(
            table, queries, vectors, default, m.parse_metric(tuning["metric"])[1]
        )
        qrels[source] = source_qrels
    choice = fusion.choose(
        query_lanes,
        qrels,
        fusion.candidates(default, tuning["grid"]),
        metric=tuning["metric"],
        max_lane_gap=float(tuning["max_lane_gap"]),
        evidence=Evidence.from_params(tuning, promotion, params),
    )
    logger.info(
        "Hybrid search with %s fuses by %s (%s): %s on validation queries.",
        result["model"], fusion_label(choice["options"]), choice["reason"],
        ", ".join(
            f"{name} {v['hybrid']:.4f} (dense {v['dense']:.4f}, lexical "
            f"{v['lexical']:.4f})" for name, v in choice["validation"].items()
        ),
    )  # fmt: skip
    return result | choice | {"tuned": choice["moved"]}


def tune_reranker(
    *,
    table: SearchTable,
    model: SentenceTransformer,
    reranker: CrossEncoder,
    reranker_history: dict[str, Any],
    search_options: dict[str, Any],
    validation_queries: pd.DataFrame,
    reranker_params: dict[str, Any],
    params: dict[str, Any],
    promotion: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """How much the trained reranker's score weighs against the hybrid score
    in the order it serves (see :func:`product_search.search.rerank.blended_order`):
    ``reranker.weight`` when set; else ``reranker.tuning.default`` (0: the
    reranker is not used), unless a weight of ``reranker.tuning.grid`` beats it
    on the validation queries by more than chance (the rule of
    :mod:`product_search.search.tuning`, with the promotion gate's p-value).
    Each judging query's top ``top_n`` hybrid hits, with the fusion tuned for
    ``model``, are scored once; at most ``tuning.max_queries`` of them."""
    if not (reranker_history or {}).get("trained"):
        return {"model": None, "weight": 0.0, "tuned": False, "reason": "no reranker"}
    result = {"model": model_id(reranker)}
    tuning = reranker_params.get("tuning") or {}
    default = float(tuning.get("default", 0.0))
    fixed = reranker_params.get("weight")
    _require_columns(
        validation_queries, "validation_queries",
        ["query_id", "query", "product_id", "source"],
    )  # fmt: skip
    evidence = Evidence.from_params(tuning, promotion, params)
    sets = _validation_sets(validation_queries)
    judges, judged_by = judging_sources(
        {source: len(texts) for source, (texts, _) in sets.items()},
        "log", evidence.min_queries, evidence.pool_sources,
    )  # fmt: skip
    why = (
        f"reranker.weight is set to {fixed}" if fixed is not None
        else f"the default stays: {judged_by}" if not judges
        else None
    )  # fmt: skip
    if why:
        weight = default if fixed is None else float(fixed)
        logger.info("The reranker's weight is %s: %s.", weight, why)
        return result | {"weight": weight, "tuned": False, "reason": why}
    texts = {
        f"{source}:{qid}": text
        for source in judges
        for qid, text in sets[source][0].items()
    }
    qrels = {
        f"{source}:{qid}": judged
        for source in judges
        for qid, judged in sets[source][1].items()
    }
    cap = tuning.get("max_queries")
    if cap and len(texts) > int(cap):
        rng = np.random.default_rng(evidence.seed)
        keep = set(rng.permutation(sorted(texts))[: int(cap)])
        texts = {qid: text for qid, text in texts.items() if qid in keep}
    options = SearchOptions(**search_options["options"])
    vectors = unit_vectors(model, list(texts.values()), params["batch_size"])
    top_n, columns = (
        int(reranker_params["top_n"]),
        list(reranker_params["text_columns"]),
    )
    scored = []
    for (qid, text), vector in zip(texts.items(), vectors, strict=True):
        hits = table.search(text, vector, top_n, mode="hybrid", options=options)
        scored.append((qid, hits, rerank_scores(reranker, text, hits, columns)))
    metric = tuning.get("metric", "ndcg@10")
    k = m.parse_metric(metric)[1]
    qrels = {qid: qrels[qid] for qid in texts}
    values = {}
    for weight in sorted({default, *(float(w) for w in tuning["grid"])}):
        run = {
            qid: m.ranked_run(
                [hits[i].product_id for i in blended_order(
                    [hit.score for hit in hits], scores, weight
                )][:k]
            )
            for qid, hits, scores in scored
        }  # fmt: skip
        values[weight] = m.graded_metrics(qrels, run, [metric])[metric]
    decided = choose_on_evidence(values, default, sorted(values), evidence)
    best = float(decided["choice"])
    reason = f"{judged_by}; " + explain_choice(
        decided["cross_validation"], decided["moved"]
    )
    means = {w: float(np.mean(list(v.values()))) for w, v in values.items()}
    logger.info(
        "The reranker's weight against the hybrid score: %s (%s %.4f on %d "
        "validation queries; retrieval order %.4f): %s.",
        best, metric, means[best], len(scored), means.get(0.0, float("nan")), reason,
    )  # fmt: skip
    return result | {
        "weight": best,
        "tuned": decided["moved"],
        "reason": reason,
        "metric": metric,
        "queries": {"sources": judges, "count": len(scored)},
        "cross_validation": decided["cross_validation"],
        "validation": {str(w): v for w, v in means.items()},
    }


def evaluate_search_modes(
    *,
    base_table: SearchTable,
    fine_tuned_table: SearchTable,
    base_model: SentenceTransformer,
    fine_tuned_model: SentenceTransformer,
    base_search_options: dict[str, Any],
    fine_tuned_search_options: dict[str, Any],
    evaluation_set: dict[str, Any],
    params: dict[str, Any],
    promotion: dict[str, Any],
    reranker: CrossEncoder | None = None,
    reranker_history: dict[str, Any] | None = None,
    reranker_params: dict[str, Any] | None = None,
    reranker_options: dict[str, Any] | None = None,
    onnx: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Lexical, dense and hybrid search (each model, with the fusion tuned for
    it) as the service runs them, through the database, on the held-out queries
    and the judged real queries: ``{"test_queries": {mode: metrics},
    "real_queries": ...}``. With a trained ``reranker``, also the fine-tuned
    model's hybrid search reranked, and whether the reranker ships: only when
    it does not lower the ``promotion`` metric (on the real queries when there
    are some) by a significant amount or below its ``reranker.min_gain``, and
    which of its ONNX variants serves (see :func:`_reranker_variant`). A
    reranker whose weight is 0 is neither run nor shipped."""
    rerankers, unused = {}, None
    if reranker is not None and (reranker_history or {}).get("trained"):
        rerankers["fine_tuned"] = Reranker(
            model=reranker,
            model_id=model_id(reranker),
            top_n=int(reranker_params["top_n"]),
            columns=tuple(reranker_params["text_columns"]),
            weight=_reranker_weight(reranker, reranker_options),
        )
        if rerankers["fine_tuned"].weight == 0:
            # Its order would be hybrid's: not worth a run, nor shipping.
            unused = rerankers.pop("fine_tuned").describe() | {
                "deploy": False,
                "reason": "Its weight against the hybrid score is 0 "
                f"({(reranker_options or {}).get('reason', 'reranker.weight')}), "
                "so it would not change the order.",
            }
    options = {
        "base": SearchOptions(**base_search_options["options"]),
        "fine_tuned": SearchOptions(**fine_tuned_search_options["options"]),
    }
    names = list(params["search_metrics"])
    k = max(m.parse_metric(name)[1] for name in names)
    tests = evaluation_set["test_queries"]
    query_sets = {
        "test_queries": (
            dict(zip(tests["query_id"], tests["query"], strict=True)),
            {
                qid: {pid: 1}
                for qid, pid in zip(tests["query_id"], tests["product_id"], strict=True)
            },
        )
    }
    judged = evaluation_set["judged"]
    if judged:
        query_sets["real_queries"] = (judged["queries"], judged["qrels"])
    rerank_per_query: dict[str, Any] = {}
    per_query_sets: dict[str, Any] = {}
    result: dict[str, Any] = {
        "metrics": names,
        "k": k,
        "options": {name: o.model_dump() for name, o in options.items()},
        "tuning": {
            name: {
                key: tuned[key]
                for key in (
                    "tuned",
                    "reason",
                    "metric",
                    "objective",
                    "cross_validation",
                    "validation",
                )
                if key in tuned
            }  # fmt: skip
            for name, tuned in (
                ("base", base_search_options),
                ("fine_tuned", fine_tuned_search_options),
            )
        },
    }
    for set_name, (queries, qrels) in query_sets.items():
        runs = search_mode_runs(
            {"base": base_table, "fine_tuned": fine_tuned_table},
            {"base": base_model, "fine_tuned": fine_tuned_model},
            queries,
            k=k,
            options=options,
            batch_size=int(params["batch_size"]),
            rerankers=rerankers,
        )
        per_query = {
            mode: m.graded_metrics(qrels, run, names) for mode, run in runs.items()
        }
        per_mode = {
            mode: {
                metric: float(np.mean(list(values.values())))
                for metric, values in metrics.items()
            }
            for mode, metrics in per_query.items()
        }
        result[set_name] = per_mode
        per_query_sets[set_name] = per_query
        if rerankers:
            rerank_per_query[set_name] = per_query
        logger.info(
            "Search modes on %s (%s): %s",
            set_name, names[0],
            ", ".join(f"{mode} {v[names[0]]:.4f}" for mode, v in per_mode.items()),
        )  # fmt: skip
    if rerankers:
        verdict = _reranker_verdict(
            rerankers["fine_tuned"], rerank_per_query, params, reranker_params,
            promotion,
        )  # fmt: skip
        verdict["weight_reason"] = (reranker_options or {}).get("reason")
        result["reranker"] = verdict | _reranker_variant(
            rerankers["fine_tuned"], model=reranker, query_sets=query_sets,
            table=fine_tuned_table, encoder=fine_tuned_model,
            options=options["fine_tuned"], per_query=rerank_per_query,
            metric=verdict["metric"], params=params,
            reranker_params=reranker_params, onnx=onnx or {},
        )  # fmt: skip
    elif unused:
        logger.info("Reranker: %s", unused["reason"])
        result["reranker"] = unused
    served = (
        "hybrid_rerank_fine_tuned"
        if (result.get("reranker") or {}).get("deploy")
        else "hybrid_fine_tuned"
    )
    set_name = "real_queries" if "real_queries" in per_query_sets else "test_queries"
    result["lane_check"] = _lane_check(
        per_query_sets[set_name], served, names[0], set_name,
        _statistics(params, promotion),
    )  # fmt: skip
    return result


def _lane_check(
    per_query: dict[str, dict[str, dict[str, float]]],
    served: str,
    metric: str,
    set_name: str,
    statistics: dict[str, Any],
) -> dict[str, Any]:
    """Whether what ``/search`` serves (``served``) ranks significantly below
    one of its own lanes with the fine-tuned model (the gate's paired rule),
    on the real queries when there are some: a warning for the report's
    first lines and the run's log."""
    lanes = {"dense": "dense_fine_tuned", "lexical": "lexical"}
    comparisons = {
        lane: m.paired_comparison(
            per_query[mode][metric], per_query[served][metric], **statistics
        )
        for lane, mode in lanes.items()
    }
    below = {
        lane: c for lane, c in comparisons.items()
        if c["significant"] and c["mean_delta"] < 0
    }  # fmt: skip
    check = {
        "queries": set_name,
        "metric": metric,
        "served": served,
        "below": sorted(below),
        "comparisons": {
            lane: {
                key: c[key]
                for key in ("mean_delta", "wilcoxon_p_value", "ci95_low", "ci95_high")
            }
            for lane, c in comparisons.items()
        },
    }
    for lane, c in below.items():
        logger.warning(
            "/search (%s) ranks significantly below its %s lane on the %s: %s "
            "%+.4f (Wilcoxon p = %.3g). See the evaluation report's summary.",
            served.removesuffix("_fine_tuned").replace("_", " + "), lane,
            set_name.replace("_", " "), metric, c["mean_delta"],
            c["wilcoxon_p_value"],
        )  # fmt: skip
    return check


def _reranker_weight(
    reranker: CrossEncoder, reranker_options: dict[str, Any] | None
) -> float:
    """The weight tuned for this very reranker, else 1 (its order alone)."""
    options = reranker_options or {}
    if options.get("model") != model_id(reranker):
        if options:
            logger.warning(
                "The reranker's tuned weight is %s's, not %s's; it reranks alone. "
                "Run the evaluation pipeline to tune it.",
                options.get("model"), model_id(reranker),
            )  # fmt: skip
        return 1.0
    return float(options["weight"])


def _reranker_verdict(
    reranker: Reranker,
    per_query: dict[str, dict[str, dict[str, dict[str, float]]]],
    params: dict[str, Any],
    reranker_params: dict[str, Any],
    promotion: dict[str, Any],
) -> dict[str, Any]:
    """Whether the reranker ships: the promotion gate's rule (see
    :func:`product_search.metrics.promotion_verdict`, with ``reranker.min_gain``)
    for hybrid reranked against hybrid, both with the fine-tuned model, on the
    real queries when there are some."""
    real = "real_queries" in per_query
    runs = per_query["real_queries" if real else "test_queries"]
    metric = promotion["metric"]
    if metric not in runs["hybrid_fine_tuned"]:
        metric = next(iter(runs["hybrid_fine_tuned"]))
    verdict = m.promotion_verdict(
        runs["hybrid_fine_tuned"][metric],
        runs["hybrid_rerank_fine_tuned"][metric],
        metric=metric,
        queries="real queries" if real else "held-out test queries",
        models=("hybrid search", f"hybrid search reranked by {reranker.model_id}"),
        min_gain=reranker_params.get("min_gain"),
        names=("Hybrid search reranked", "hybrid search alone"),
        **_statistics(params, promotion),
    )
    logger.info("Reranker: %s", verdict["reason"])
    return reranker.describe() | {"deploy": verdict["promote"]} | verdict


def _reranker_variant(
    reranker: Reranker,
    *,
    model: CrossEncoder,
    query_sets: dict[str, tuple[dict[str, str], dict[str, dict[str, int]]]],
    table: SearchTable,
    encoder: SentenceTransformer,
    options: SearchOptions,
    per_query: dict[str, dict[str, dict[str, dict[str, float]]]],
    metric: str,
    params: dict[str, Any],
    reranker_params: dict[str, Any],
    onnx: dict[str, Any],
) -> dict[str, Any]:
    """Which graph of the reranker serves: its int8 ONNX export, several
    times faster on CPU, when its ``promotion`` metric on the queries that
    judged the reranker is within ``reranker.serving.max_int8_loss`` of the
    full-precision reranker's; else fp32 over ``serving.fp32_top_n`` hits, so
    that a request stays as fast. ``{}`` with ``onnx.evaluate`` off."""
    serving = reranker_params.get("serving") or {}
    if not onnx.get("evaluate", True) or not serving:
        return {}
    set_name = "real_queries" if "real_queries" in query_sets else "test_queries"
    queries, qrels = query_sets[set_name]
    export = export_onnx(
        model, reranker.model_id, int8=True, opset=int(onnx.get("opset", 17))
    )
    int8 = dataclasses.replace(
        reranker, model=OnnxReranker(export, "int8", onnx.get("threads"))
    )
    vectors = unit_vectors(encoder, list(queries.values()), int(params["batch_size"]))
    run = search_run(
        table, queries, vectors, mode="hybrid", k=m.parse_metric(metric)[1],
        options=options, reranker=int8,
    )  # fmt: skip
    fp32_values = per_query[set_name]["hybrid_rerank_fine_tuned"][metric]
    int8_values = m.graded_metrics(qrels, run, [metric])[metric]
    fp32 = float(np.mean(list(fp32_values.values())))
    quantised = float(np.mean(list(int8_values.values())))
    tolerance = float(serving.get("max_int8_loss", 0.002))
    within = quantised >= fp32 - tolerance
    variant = {
        "metric": metric,
        "queries": "real queries" if set_name == "real_queries" else "test queries",
        "fp32": fp32,
        "int8": quantised,
        "int8_change": quantised - fp32,
        "max_int8_loss": tolerance,
        "serve": "int8" if within else "fp32",
        "top_n": reranker.top_n if within else int(serving["fp32_top_n"]),
    }
    logger.info(
        "Reranker int8: %s %.4f against %.4f in full precision (%+.4f): it serves %s "
        "over %d hits.",
        metric, quantised, fp32, quantised - fp32, variant["serve"], variant["top_n"],
    )  # fmt: skip
    return {"variant": variant}
