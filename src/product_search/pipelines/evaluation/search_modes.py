"""The node that measures every search mode as the service runs it, through
the database: lexical, dense and hybrid with each model, and hybrid reranked,
on the held-out and the judged real queries; whether the reranker ships, and
which of its graphs serves; and whether what ``/search`` serves ranks below
one of its own lanes."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
from sentence_transformers import CrossEncoder, SentenceTransformer

from product_search import metrics as m
from product_search.datasets import model_id
from product_search.onnx_export import export_onnx
from product_search.promotion import paired_comparison, promotion_verdict, statistics
from product_search.release import FusionChoice, RerankerWeight, Verdict
from product_search.scoring import EvaluationSet, search_mode_runs, search_run
from product_search.scoring.modes import (
    LaneCheck,
    LaneComparison,
    RerankerResult,
    RerankerVariant,
    SearchModeResults,
)
from product_search.search.index import unit_vectors
from product_search.search.onnx import OnnxReranker
from product_search.search.rerank import Reranker
from product_search.search.table import SearchOptions, SearchTable

logger = logging.getLogger(__name__)


def evaluate_search_modes(
    *,
    base_table: SearchTable,
    fine_tuned_table: SearchTable,
    base_model: SentenceTransformer,
    fine_tuned_model: SentenceTransformer,
    base_search_options: FusionChoice,
    fine_tuned_search_options: FusionChoice,
    evaluation_set: EvaluationSet,
    params: dict[str, Any],
    promotion: dict[str, Any],
    reranker: CrossEncoder | None = None,
    reranker_history: dict[str, Any] | None = None,
    reranker_params: dict[str, Any] | None = None,
    reranker_options: RerankerWeight | None = None,
    onnx: dict[str, Any] | None = None,
) -> SearchModeResults:
    """Lexical, dense and hybrid search (each model, with the fusion tuned for
    it) as the service runs them, through the database, on the held-out queries
    and the judged real queries. With a trained ``reranker``, also the fine-tuned
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
            why = reranker_options.reason if reranker_options else "reranker.weight"
            unused = RerankerResult(
                **rerankers.pop("fine_tuned").describe(),
                deploy=False,
                reason=f"Its weight against the hybrid score is 0 ({why}), "
                "so it would not change the order.",
            )
    options = {
        "base": base_search_options.options,
        "fine_tuned": fine_tuned_search_options.options,
    }
    names = list(params["search_metrics"])
    k = max(m.parse_metric(name)[1] for name in names)
    tests = evaluation_set.test_queries
    query_sets = {
        "test_queries": (
            dict(zip(tests.query_id, tests.query, strict=True)),
            {
                qid: {pid: 1}
                for qid, pid in zip(tests.query_id, tests.product_id, strict=True)
            },
        )
    }
    judged = evaluation_set.judged
    if judged is not None:
        query_sets["real_queries"] = (judged.queries, judged.qrels)
    rerank_per_query: dict[str, Any] = {}
    per_query_sets: dict[str, Any] = {}
    per_set: dict[str, dict[str, dict[str, float]]] = {}
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
        per_set[set_name] = per_mode
        per_query_sets[set_name] = per_query
        if rerankers:
            rerank_per_query[set_name] = per_query
        logger.info(
            "Search modes on %s (%s): %s",
            set_name, names[0],
            ", ".join(f"{mode} {v[names[0]]:.4f}" for mode, v in per_mode.items()),
        )  # fmt: skip
    result = unused
    if rerankers:
        verdict = _reranker_verdict(
            rerankers["fine_tuned"], rerank_per_query, params, reranker_params,
            promotion,
        )  # fmt: skip
        result = RerankerResult(
            **rerankers["fine_tuned"].describe(),
            deploy=verdict.promote,
            reason=verdict.reason,
            weight_reason=reranker_options.reason if reranker_options else None,
            verdict=verdict,
            variant=_reranker_variant(
                rerankers["fine_tuned"], model=reranker, query_sets=query_sets,
                table=fine_tuned_table, encoder=fine_tuned_model,
                options=options["fine_tuned"], per_query=rerank_per_query,
                metric=verdict.metric, params=params,
                reranker_params=reranker_params, onnx=onnx or {},
            ),
        )  # fmt: skip
    elif unused:
        logger.info("Reranker: %s", unused.reason)
    served = (
        "hybrid_rerank_fine_tuned"
        if result is not None and result.deploy
        else "hybrid_fine_tuned"
    )
    set_name = "real_queries" if "real_queries" in per_query_sets else "test_queries"
    return SearchModeResults(
        metrics=names,
        k=k,
        options=options,
        tuning={"base": base_search_options, "fine_tuned": fine_tuned_search_options},
        test_queries=per_set["test_queries"],
        real_queries=per_set.get("real_queries"),
        reranker=result,
        lane_check=_lane_check(
            per_query_sets[set_name],
            served,
            names[0],
            set_name,
            statistics(params, promotion),
        ),
    )


def _lane_check(
    per_query: dict[str, dict[str, dict[str, float]]],
    served: str,
    metric: str,
    set_name: str,
    statistics: dict[str, Any],
) -> LaneCheck:
    """Whether what ``/search`` serves (``served``) ranks significantly below
    one of its own lanes with the fine-tuned model (the gate's paired rule),
    on the real queries when there are some: a warning for the report's
    first lines and the run's log."""
    lanes = {"dense": "dense_fine_tuned", "lexical": "lexical"}
    comparisons = {
        lane: paired_comparison(
            per_query[mode][metric], per_query[served][metric], **statistics
        )
        for lane, mode in lanes.items()
    }
    below = {
        lane: c for lane, c in comparisons.items()
        if c["significant"] and c["mean_delta"] < 0
    }  # fmt: skip
    check = LaneCheck(
        queries=set_name,
        metric=metric,
        served=served,
        below=sorted(below),
        comparisons={
            lane: LaneComparison(**{key: c[key] for key in LaneComparison.model_fields})
            for lane, c in comparisons.items()
        },
    )
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
    reranker: CrossEncoder, reranker_options: RerankerWeight | None
) -> float:
    """The weight tuned for this very reranker, else 1 (its order alone)."""
    if reranker_options is None or reranker_options.model != model_id(reranker):
        if reranker_options is not None:
            logger.warning(
                "The reranker's tuned weight is %s's, not %s's; it reranks alone. "
                "Run the evaluation pipeline to tune it.",
                reranker_options.model, model_id(reranker),
            )  # fmt: skip
        return 1.0
    return reranker_options.weight


def _reranker_verdict(
    reranker: Reranker,
    per_query: dict[str, dict[str, dict[str, dict[str, float]]]],
    params: dict[str, Any],
    reranker_params: dict[str, Any],
    promotion: dict[str, Any],
) -> Verdict:
    """Whether the reranker ships: the promotion gate's rule (see
    :func:`product_search.promotion.promotion_verdict`, with ``reranker.min_gain``)
    for hybrid reranked against hybrid, both with the fine-tuned model, on the
    real queries when there are some."""
    real = "real_queries" in per_query
    runs = per_query["real_queries" if real else "test_queries"]
    metric = promotion["metric"]
    if metric not in runs["hybrid_fine_tuned"]:
        metric = next(iter(runs["hybrid_fine_tuned"]))
    verdict = promotion_verdict(
        runs["hybrid_fine_tuned"][metric],
        runs["hybrid_rerank_fine_tuned"][metric],
        metric=metric,
        queries="real queries" if real else "held-out test queries",
        models=("hybrid search", f"hybrid search reranked by {reranker.model_id}"),
        min_gain=reranker_params.get("min_gain"),
        names=("Hybrid search reranked", "hybrid search alone"),
        **statistics(params, promotion),
    )
    logger.info("Reranker: %s", verdict["reason"])
    return Verdict.model_validate(verdict)


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
) -> RerankerVariant | None:
    """Which graph of the reranker serves: its int8 ONNX export, several
    times faster on CPU, when its ``promotion`` metric on the queries that
    judged the reranker is within ``reranker.serving.max_int8_loss`` of the
    full-precision reranker's; else fp32 over ``serving.fp32_top_n`` hits, so
    that a request stays as fast. None with ``onnx.evaluate`` off."""
    serving = reranker_params.get("serving") or {}
    if not onnx.get("evaluate", True) or not serving:
        return None
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
    variant = RerankerVariant(
        metric=metric,
        queries="real queries" if set_name == "real_queries" else "test queries",
        fp32=fp32,
        int8=quantised,
        int8_change=quantised - fp32,
        max_int8_loss=tolerance,
        serve="int8" if within else "fp32",
        top_n=reranker.top_n if within else int(serving["fp32_top_n"]),
    )
    logger.info(
        "Reranker int8: %s %.4f against %.4f in full precision (%+.4f): it serves %s "
        "over %d hits.",
        metric, quantised, fp32, quantised - fp32, variant.serve, variant.top_n,
    )  # fmt: skip
    return variant
