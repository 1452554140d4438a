"""Nodes of the evaluation pipeline: the base and the fine-tuned model are scored
on the same held-out queries (and on human judgments when there are some),
judged by the promotion gate and compared, with a report and a chart; the
release manifest tells the deployment what it may ship."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sentence_transformers import SentenceTransformer

from product_search import metrics as m
from product_search.datasets import model_id
from product_search.onnx_export import export_onnx
from product_search.promotion import judge_models, paired_comparison, statistics
from product_search.release import (
    FusionChoice,
    ReleaseManifest,
    RerankerRelease,
    Verdict,
)
from product_search.scoring import EvaluationSet, ModelEvaluation, evaluate_model
from product_search.scoring.modes import RerankerResult, SearchModeResults
from product_search.search.onnx import OnnxEncoder

from .report import plot_metrics_chart, render_report

logger = logging.getLogger(__name__)


def evaluate_onnx(
    model: SentenceTransformer,
    evaluation_set: EvaluationSet,
    torch_evaluation: ModelEvaluation,
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
        torch_real, onnx_real = torch_evaluation.real_queries, scored.real_queries
        variants[variant] = {
            "metrics": m.compare(
                torch_evaluation.metrics, scored.metrics, names=("torch", "onnx")
            ),
            "real_queries": (
                {}
                if torch_real is None or onnx_real is None
                else m.compare(
                    torch_real.metrics, onnx_real.metrics, names=("torch", "onnx")
                )
            ),
        }
        primary = params["primary_metric"]
        change = variants[variant]["metrics"][primary]
        logger.info(
            "ONNX %s: %s = %.4f (torch %.4f, %+.5f)",
            variant, primary, change["onnx"], change["torch"], change["delta"],
        )  # fmt: skip
    return {"model": export.model_id, "variants": variants}


def compare_models(
    *,
    baseline_evaluation: ModelEvaluation,
    fine_tuned_evaluation: ModelEvaluation,
    search_mode_metrics: SearchModeResults | None,
    evaluation_set: EvaluationSet,
    params: dict[str, Any],
    promotion: dict[str, Any],
    verdict: Verdict,
    onnx_metrics: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every metric of both models with its change, whether the primary metric's
    change is significant, the metrics of each search mode, what the ONNX
    export changes (``onnx_metrics``), the verdict of the promotion gate on the
    fine-tuned model (``promotion``), and the per-query primary metric of both
    models."""
    primary = params["primary_metric"]
    base_pq = baseline_evaluation.per_query_ndcg
    tuned_pq = fine_tuned_evaluation.per_query_ndcg
    metrics: dict[str, Any] = {
        "primary_metric": primary,
        "models": {
            "baseline": baseline_evaluation.model_id,
            "fine_tuned": fine_tuned_evaluation.model_id,
        },
        "corpus_size": len(evaluation_set.corpus.product_id),
        "test_queries": len(evaluation_set.test_queries.query_id),
        "metrics": m.compare(
            baseline_evaluation.metrics, fine_tuned_evaluation.metrics
        ),
        "significance": {"metric": primary}
        | paired_comparison(base_pq, tuned_pq, **statistics(params, promotion)),
        "search_modes": (
            search_mode_metrics.model_dump(mode="json") if search_mode_metrics else {}
        ),
        "onnx": onnx_metrics or {},
    }
    judged = evaluation_set.judged
    base_real = baseline_evaluation.real_queries
    tuned_real = fine_tuned_evaluation.real_queries
    if judged is not None and base_real is not None and tuned_real is not None:
        headline = params["real_query_metrics"][0]
        metrics["real_queries"] = judged.counts | {
            "metrics": m.compare(base_real.metrics, tuned_real.metrics),
            "significance": {"metric": headline}
            | paired_comparison(
                base_real.per_query[headline],
                tuned_real.per_query[headline],
                **statistics(params, promotion),
            ),
        }
    metrics["promotion"] = verdict.model_dump()

    per_query = pd.DataFrame(evaluation_set.test_queries.model_dump())
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
    baseline_evaluation: ModelEvaluation,
    fine_tuned_evaluation: ModelEvaluation,
    training_history: dict[str, Any],
    generated_queries: pd.DataFrame,
    data_quality: dict[str, Any],
    split: dict[str, Any],
    params: dict[str, Any],
    search_params: dict[str, Any],
) -> str:
    """The evaluation report in Markdown, for a search lead to read and forward;
    a hybrid search below its better lane by more than
    ``search.tuning.max_lane_gap`` is called out."""
    return render_report(
        metrics=metrics,
        examples=tuple(
            [example.model_dump() for example in evaluation.examples]
            for evaluation in (baseline_evaluation, fine_tuned_evaluation)
        ),
        training_history=training_history,
        generated_queries=generated_queries,
        data_quality=data_quality,
        split=split,
        params=params,
        max_lane_gap=float(search_params["tuning"]["max_lane_gap"]),
    )


def plot_metrics(metrics: dict[str, Any]) -> Figure:
    """Grouped bars of every metric, base model beside fine-tuned model."""
    return plot_metrics_chart(metrics)


def promotion_verdict(
    baseline_evaluation: ModelEvaluation,
    fine_tuned_evaluation: ModelEvaluation,
    params: dict[str, Any],
    promotion: dict[str, Any],
) -> Verdict:
    """The promotion gate's verdict on the fine-tuned model against the base
    model (see :func:`product_search.promotion.judge_models`)."""
    return Verdict.model_validate(
        judge_models(baseline_evaluation, fine_tuned_evaluation, params, promotion)
    )


def reranker_release(result: RerankerResult | None) -> RerankerRelease:
    """The reranker that ships (its model id, how many hits it reranks, the
    columns it reads, its weight against the hybrid score, and the ONNX
    variant that serves it), or, when none ships, why."""
    if result is None:
        return RerankerRelease(
            reason="No reranker was trained (reranker.enabled: false)."
        )
    if not result.deploy:
        logger.warning("The reranker is not deployed: %s", result.reason)
        return RerankerRelease(reason=f"Not deployed: {result.reason}")
    variant = result.variant
    return RerankerRelease(
        model=result.model,
        top_n=variant.top_n if variant else result.top_n,
        text_columns=result.text_columns,
        weight=result.weight,
        variant=variant.serve if variant else "fp32",
        reason=result.reason,
    )


def release_manifest(
    verdict: Verdict,
    search_options: FusionChoice,
    search_mode_metrics: SearchModeResults,
) -> ReleaseManifest:
    """What the deployment may ship, and nothing it must read elsewhere: the
    fine-tuned model the gate judged, the verdict, the fusion tuned for it and
    the reranker that serves with it (or why none does)."""
    return ReleaseManifest(
        model=verdict.candidate_model,
        verdict=verdict,
        fusion=search_options,
        reranker=reranker_release(search_mode_metrics.reranker),
    )
