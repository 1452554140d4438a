"""Scoring one embedding model on the evaluation set, by exact search over the
whole catalog: binary metrics on the held-out test queries, graded metrics on
the judged real queries, and the top products of the sample queries."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from product_search import metrics as m
from product_search.datasets import model_id
from product_search.scoring.contracts import (
    Corpus,
    EvaluationSet,
    Judged,
    ModelEvaluation,
    RealQueryMetrics,
    SearchExample,
)

logger = logging.getLogger(__name__)


def _real_query_metrics(
    model: SentenceTransformer,
    judged: Judged,
    product_ids: list[str],
    embeddings: torch.Tensor,
    params: dict[str, Any],
) -> RealQueryMetrics:
    """Graded metrics of the judged queries, retrieved over the whole corpus."""
    names = list(params["real_query_metrics"])
    query_ids = list(judged.queries)
    hits = m.top_k(
        model,
        [judged.queries[qid] for qid in query_ids],
        embeddings,
        k=max(m.parse_metric(name)[1] for name in names),
        batch_size=int(params["batch_size"]),
    )
    run = {
        qid: {product_ids[row]: score for row, score in ranked}
        for qid, ranked in zip(query_ids, hits, strict=True)
    }
    per_query = m.graded_metrics(judged.qrels, run, names)
    return RealQueryMetrics(
        metrics={
            name: float(np.mean(list(per_query[name].values()))) for name in names
        },
        per_query=per_query,
    )


def _search_examples(
    model: SentenceTransformer,
    corpus: Corpus,
    embeddings: torch.Tensor,
    params: dict[str, Any],
) -> list[SearchExample]:
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
        SearchExample(
            query=query,
            results=[
                {
                    "product_id": corpus.product_id[row],
                    "title": corpus.title[row],
                    "score": score,
                }
                for row, score in ranked
            ],
        )
        for query, ranked in zip(samples, top, strict=True)
    ]


def evaluate_model(
    model: SentenceTransformer, evaluation_set: EvaluationSet, params: dict[str, Any]
) -> ModelEvaluation:
    """Score one model: binary metrics and per-query NDCG on the held-out queries,
    graded metrics on the judged queries, and the top products of each sample
    query. The corpus is encoded once and used for all three."""
    batch_size = int(params["batch_size"])
    corpus, tests = evaluation_set.corpus, evaluation_set.test_queries
    primary = params["primary_metric"]
    _, primary_k = m.parse_metric(primary)
    embeddings = m.encode_corpus(model, corpus.text, batch_size)
    binary = m.binary_ir_metrics(
        model,
        queries=dict(zip(tests.query_id, tests.query, strict=True)),
        corpus=dict(zip(corpus.product_id, corpus.text, strict=True)),
        corpus_embeddings=embeddings,
        relevant_docs={
            qid: {pid}
            for qid, pid in zip(tests.query_id, tests.product_id, strict=True)
        },
        cutoffs=params["cutoffs"],
        primary_k=primary_k,
        batch_size=batch_size,
    )
    judged = evaluation_set.judged
    identifier = model_id(model)
    logger.info(
        "%s: %s = %.4f on %d test queries",
        identifier, primary, binary.metrics[primary], len(tests.query_id),
    )  # fmt: skip
    return ModelEvaluation(
        model_id=identifier,
        metrics=binary.metrics,
        per_query_ndcg=binary.per_query_ndcg,
        real_queries=(
            None
            if judged is None
            else _real_query_metrics(
                model, judged, corpus.product_id, embeddings, params
            )
        ),
        examples=_search_examples(model, corpus, embeddings, params),
    )
