"""Nodes of the deployment pipeline: the promotion gate, then the products
embedded and analysed for the search table."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from kedro.io.core import DatasetError
from sentence_transformers import SentenceTransformer

from product_search.datasets import load_model_by_id, model_id
from product_search.errors import PromotionRefusedError, UserError
from product_search.pipelines.evaluation.nodes import (
    build_evaluation_set,
    evaluate_model,
    promotion_verdict,
)
from product_search.search.bm25 import Bm25Params
from product_search.search.index import (
    ProductIndex,
    build_product_index,
    unit_vectors,
)
from product_search.search.onnx import OnnxExport, export_onnx
from product_search.search.table import SearchOptions, SearchTable

logger = logging.getLogger(__name__)


def _serving_model_id(serving_table: SearchTable) -> str | None:
    info = serving_table.info()
    return info["model"] if info else None


def decide_promotion(
    *,
    metrics: dict[str, Any],
    serving_table: SearchTable,
    candidate: SentenceTransformer,
    base_model: SentenceTransformer,
    products: pd.DataFrame,
    test_queries: pd.DataFrame,
    judged_queries: pd.DataFrame,
    relevance_judgments: pd.DataFrame,
    evaluation_params: dict[str, Any],
    promotion: dict[str, Any],
) -> dict[str, Any]:
    """The gate before the swap: may ``candidate`` replace the model that
    serves now? Against the base model (a first run, or the base serving) the
    evaluation's verdict in ``metrics`` decides; against an earlier fine-tuned
    model both are scored here the same way. ``force`` deploys regardless."""
    verdict = metrics.get("promotion")
    candidate_id = model_id(candidate)
    if not verdict:
        raise UserError(
            "metrics.json has no promotion verdict: run the evaluation pipeline "
            "before the deployment (kedro run --pipelines=evaluation,deployment)."
        )
    if verdict["candidate_model"] != candidate_id:
        raise UserError(
            f"metrics.json judges the model '{verdict['candidate_model']}', but "
            f"the model to deploy is '{candidate_id}': run the evaluation "
            "pipeline on it first."
        )
    serving_id = _serving_model_id(serving_table) or model_id(base_model)
    if serving_id == candidate_id:
        verdict = verdict | {
            "serving_model": serving_id,
            "promote": True,
            "reason": "The candidate model is the one that serves already.",
        }
    elif serving_id != verdict["serving_model"]:
        logger.info("Comparing the candidate with the serving model %s", serving_id)
        try:
            serving = load_model_by_id(serving_id)
        except DatasetError as exc:
            raise UserError(
                f"The promotion gate cannot load the serving model '{serving_id}' "
                f"to compare the candidate with ({exc}). Restore it, or set "
                "promotion.force=true to deploy without the comparison."
            ) from exc
        evaluation_set = build_evaluation_set(
            products, test_queries, judged_queries, relevance_judgments
        )
        verdict = promotion_verdict(
            evaluate_model(serving, evaluation_set, evaluation_params),
            evaluate_model(candidate, evaluation_set, evaluation_params),
            evaluation_params,
            promotion,
        )
    forced = bool(promotion.get("force")) and not verdict["promote"]
    decision = verdict | {
        "deploy": verdict["promote"] or forced,
        "forced": forced,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    logger.info(
        "Promotion gate: %s %s",
        "deploy." if decision["deploy"] else "keep the serving model.",
        decision["reason"] + (" Forced." if forced else ""),
    )
    return decision


def promoted_model(
    candidate: SentenceTransformer, decision: dict[str, Any]
) -> SentenceTransformer:
    """The candidate when the gate let it through; otherwise the run ends
    here, with the serving table untouched."""
    if not decision["deploy"]:
        raise PromotionRefusedError(
            f"Not deployed: {decision['reason']} `{decision['serving_model']}` keeps "
            "serving; run with --params=promotion.force=true to deploy it anyway."
        )
    return candidate


def reranker_release(metrics: dict[str, Any]) -> dict[str, Any]:
    """The reranker the deployment ships with the table (its model id, how
    many hits it reranks, the columns it reads, its weight against the hybrid
    score, and the ONNX variant that serves it), or, when none ships, only
    the ``reason``: none was trained, its tuned weight is 0, or the
    evaluation found that it lowers relevance."""
    verdict = (metrics.get("search_modes") or {}).get("reranker")
    if not verdict:
        return {"reason": "No reranker was trained (reranker.enabled: false)."}
    if not verdict["deploy"]:
        logger.warning("The reranker is not deployed: %s", verdict["reason"])
        return {"reason": f"Not deployed: {verdict['reason']}"}
    shipped = {key: verdict[key] for key in ("model", "top_n", "text_columns")}
    variant = verdict.get("variant") or {}
    return shipped | {
        "weight": verdict.get("weight", 1.0),
        "variant": variant.get("serve", "fp32"),
        "top_n": int(variant.get("top_n", shipped["top_n"])),
    }


def export_served_model(
    model: SentenceTransformer,
    onnx: dict[str, Any],
    release: dict[str, Any] | None = None,
) -> OnnxExport:
    """The deployed model exported to ONNX for the service's ONNX Runtime
    backend (fp32, and int8 with ``onnx.int8``), with the reranker that ships
    with it (``release``, see :func:`reranker_release`) exported beside it,
    its int8 graph too where that variant serves."""
    int8, opset = bool(onnx.get("int8")), int(onnx["opset"])
    export = export_onnx(model, model_id(model), int8=int8, opset=opset)
    shipped = (release or {}).get("model")
    if shipped:
        reranker = load_model_by_id(shipped, cross_encoder=True)
        export = dataclasses.replace(
            export,
            reranker=export_onnx(
                reranker,
                shipped,
                opset=opset,
                int8=int8 or release.get("variant") == "int8",
            ),  # fmt: skip
        )
    logger.info(
        "Exported %s%s to ONNX (%s).",
        export.model_id,
        "" if export.reranker is None else f" and its reranker {shipped}",
        ", ".join(export.graphs),
    )
    return export


def embed_products(
    products: pd.DataFrame,
    model: SentenceTransformer,
    params: dict[str, Any],
) -> pd.DataFrame:
    """Encode each product's ``text`` into a unit vector, next to its id, the
    display columns a search result shows, and the id of the model.

    """
    display_columns = list(params["display_columns"])
    missing = [
        column
        for column in ["product_id", "text", *display_columns]
        if column not in products.columns
    ]
    if missing:
        raise UserError(
            f"products lacks the column(s) {missing} needed for the search table; "
            f"it has {list(products.columns)}."
        )
    embeddings = unit_vectors(
        model, products["text"].tolist(), params["batch_size"], show_progress_bar=True
    )
    name = model_id(model)
    logger.info("Embedded %d products with %s.", len(products), name)
    product_embeddings = products[["product_id", *display_columns]].reset_index(
        drop=True
    )
    return product_embeddings.assign(embedding=list(embeddings), model=name)


def index_products(
    products: pd.DataFrame,
    model: SentenceTransformer,
    params: dict[str, Any],
    search_params: dict[str, Any],
    *,
    search_options: dict[str, Any] | None = None,
    reranker: dict[str, Any] | None = None,
) -> ProductIndex:
    """The search table's content: each product's vector (see
    :func:`embed_products`), the BM25 weights of its analysed ``text``, the
    fusion ``/search`` uses with it (``search_options`` tuned for this model
    by the evaluation, else the project's ``search.options``), and the
    reranker that ships with it (see :func:`reranker_release`)."""
    embedded = embed_products(products, model, params)
    options = dict(search_params.get("options") or {})
    if search_options is not None:
        if search_options.get("model") == model_id(model):
            options = search_options["options"]
        else:
            logger.warning(
                "The tuned fusion is %s's, not %s's; recording the project's "
                "search.options instead. Run the evaluation pipeline to tune it.",
                search_options.get("model"), model_id(model),
            )  # fmt: skip
    index = build_product_index(
        embedded,
        products["text"].tolist(),
        Bm25Params(**search_params["bm25"]),
        SearchOptions(**options).model_dump(),
        reranker or None,
    )
    logger.info(
        "Analysed %d products: %d distinct terms, %.1f terms per product.",
        len(products), index.lexical.size, index.lexical.average_length,
    )  # fmt: skip
    return index
