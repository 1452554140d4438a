"""Nodes of the deployment pipeline: the promotion gate, then the model
exported for the service and the catalog indexed for the search table, with
what the evaluation's release manifest says ships with it."""

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
from product_search.onnx_export import export_onnx
from product_search.promotion import judge_models
from product_search.release import ReleaseManifest
from product_search.scoring import build_evaluation_set, evaluate_model
from product_search.search.index import ProductIndex
from product_search.search.indexing import index_products
from product_search.search.onnx import OnnxExport
from product_search.search.shards import ShardStore
from product_search.search.table import SearchTable

logger = logging.getLogger(__name__)


def _serving_model_id(serving_table: SearchTable) -> str | None:
    info = serving_table.info()
    return info["model"] if info else None


def _require_manifest_of(manifest: ReleaseManifest, model: SentenceTransformer) -> None:
    """The manifest judged ``model``, or the deployment stops here."""
    if manifest.model != model_id(model):
        raise UserError(
            f"The release manifest is for the model '{manifest.model}', but "
            f"the model to deploy is '{model_id(model)}': run the evaluation "
            "pipeline on it first (kedro run --pipelines=evaluation,deployment)."
        )


def decide_promotion(
    *,
    manifest: ReleaseManifest,
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
    verdict of the evaluation's release ``manifest`` decides; against an earlier fine-tuned
    model both are scored here the same way. ``force`` deploys regardless."""
    _require_manifest_of(manifest, candidate)
    verdict = manifest.verdict.model_dump()
    candidate_id = model_id(candidate)
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
        verdict = judge_models(
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


def export_served_model(
    model: SentenceTransformer,
    onnx: dict[str, Any],
    manifest: ReleaseManifest,
) -> OnnxExport:
    """The deployed model exported to ONNX for the service's ONNX Runtime
    backend (fp32, and int8 with ``onnx.int8``), with the reranker the
    manifest ships exported beside it, its int8 graph too where that variant
    serves."""
    int8, opset = bool(onnx.get("int8")), int(onnx["opset"])
    export = export_onnx(model, model_id(model), int8=int8, opset=opset)
    release = manifest.reranker
    shipped = release.model
    if shipped:
        reranker = load_model_by_id(shipped, cross_encoder=True)
        export = dataclasses.replace(
            export,
            reranker=export_onnx(
                reranker,
                shipped,
                opset=opset,
                int8=int8 or release.variant == "int8",
            ),  # fmt: skip
        )
    logger.info(
        "Exported %s%s to ONNX (%s).",
        export.model_id,
        "" if export.reranker is None else f" and its reranker {shipped}",
        ", ".join(export.graphs),
    )
    return export


def index_for_serving(
    products: pd.DataFrame,
    model: SentenceTransformer,
    params: dict[str, Any],
    search_params: dict[str, Any],
    manifest: ReleaseManifest,
    *,
    shards: ShardStore | None = None,
) -> ProductIndex:
    """The serving table's content (see
    :func:`product_search.search.indexing.index_products`), with the fusion
    and the reranker of the release manifest. The vectors are saved to
    ``shards`` shard by shard; those the evaluation saved for the same model
    and products are read back, not encoded again."""
    _require_manifest_of(manifest, model)
    return index_products(
        products, model, params, search_params,
        search_options=manifest.fusion.options.model_dump(),
        reranker=manifest.reranker.record(), shards=shards,
    )  # fmt: skip
