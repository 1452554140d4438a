"""Nodes that tune what ``/search`` serves with the fine-tuned model, on the
validation queries held out of its training: the fusion of hybrid search's
lanes and the reranker's weight against the hybrid score. Each leaves its
default only on evidence (:mod:`.evidence`)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from sentence_transformers import CrossEncoder, SentenceTransformer

from product_search import metrics as m
from product_search.datasets import model_id
from product_search.release import FusionChoice, JudgingQueries, RerankerWeight
from product_search.scoring import require_columns
from product_search.search.index import unit_vectors
from product_search.search.rerank import blended_order, rerank_scores
from product_search.search.table import SearchOptions, SearchTable

from . import fusion
from .evidence import Evidence, judging_sources
from .evidence import choose as choose_on_evidence
from .evidence import explain as explain_choice
from .report import fusion_label

logger = logging.getLogger(__name__)


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
) -> FusionChoice:
    """The fusion hybrid search uses with ``model``, chosen on the validation
    queries (held out of its training) through its search table: the
    project's ``search.options``, unless a fusion of ``search.tuning.grid``
    beats it there by more than chance (see :func:`.fusion.choose`, with the
    promotion gate's p-value). ``options`` of the result is what the
    deployment records and ``/search`` uses; ``reason`` says why."""
    default = SearchOptions(**search_params["options"])
    tuning = search_params.get("tuning") or {}
    name = model_id(model)
    require_columns(
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
                    name, why)  # fmt: skip
        return FusionChoice(model=name, options=default, tuned=False, reason=why)
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
        name, fusion_label(choice["options"]), choice["reason"],
        ", ".join(
            f"{name} {v['hybrid']:.4f} (dense {v['dense']:.4f}, lexical "
            f"{v['lexical']:.4f})" for name, v in choice["validation"].items()
        ),
    )  # fmt: skip
    return FusionChoice(model=name, tuned=choice.pop("moved"), **choice)


def tune_reranker(
    *,
    table: SearchTable,
    model: SentenceTransformer,
    reranker: CrossEncoder,
    reranker_history: dict[str, Any],
    search_options: FusionChoice,
    validation_queries: pd.DataFrame,
    reranker_params: dict[str, Any],
    params: dict[str, Any],
    promotion: dict[str, Any] | None = None,
) -> RerankerWeight:
    """How much the trained reranker's score weighs against the hybrid score
    in the order it serves (see :func:`product_search.search.rerank.blended_order`):
    ``reranker.weight`` when set; else ``reranker.tuning.default`` (0: the
    reranker is not used), unless a weight of ``reranker.tuning.grid`` beats it
    on the validation queries by more than chance (the rule of
    :mod:`.evidence`, with the promotion gate's p-value).
    Each judging query's top ``top_n`` hybrid hits, with the fusion tuned for
    ``model``, are scored once; at most ``tuning.max_queries`` of them."""
    if not (reranker_history or {}).get("trained"):
        return RerankerWeight(model=None, weight=0.0, tuned=False, reason="no reranker")
    name = model_id(reranker)
    tuning = reranker_params.get("tuning") or {}
    default = float(tuning.get("default", 0.0))
    fixed = reranker_params.get("weight")
    require_columns(
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
        return RerankerWeight(model=name, weight=weight, tuned=False, reason=why)
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
    options = search_options.options
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
    return RerankerWeight(
        model=name,
        weight=best,
        tuned=decided["moved"],
        reason=reason,
        metric=metric,
        queries=JudgingQueries(sources=judges, count=len(scored)),
        cross_validation=decided["cross_validation"],
        validation={str(w): v for w, v in means.items()},
    )
