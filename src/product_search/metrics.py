"""Retrieval metrics, binary and graded, the same wherever a ranking is scored.

Two kinds of evaluation, one module:

* binary metrics on synthetic test queries, where each query has exactly the
  product it was written for as its relevant document: NDCG@k, MRR@k,
  Accuracy@k and Recall@k from sentence-transformers'
  ``InformationRetrievalEvaluator`` (cosine similarity);
* graded metrics on human relevance judgments with ranx: NDCG@k with linear
  gains (Järvelin & Kekäläinen), MRR@k and Recall@k, where a judgment above 0
  counts as relevant.

A corpus is encoded once per model (:func:`encode_corpus`) and every evaluation
of that model reuses the embeddings. Per-query values feed the paired
comparisons of :mod:`product_search.promotion`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from numba.core.errors import NumbaTypeSafetyWarning
from ranx import Qrels, Run, evaluate
from sentence_transformers.sentence_transformer.evaluation import (
    InformationRetrievalEvaluator,
)
from sentence_transformers.util import cos_sim, semantic_search

from product_search.errors import UserError
from product_search.search.index import log_pace

#: Metric families of the binary evaluation, as the evaluator names them.
BINARY_FAMILIES = ("ndcg", "mrr", "accuracy", "recall")


class Encoder(Protocol):
    """What the metrics need of a model; a ``SentenceTransformer`` is one."""

    def encode_query(self, inputs: list[str], **kwargs: Any) -> Any: ...

    def encode_document(self, inputs: list[str], **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class BinaryEvaluation:
    """Mean metrics over the queries, and the primary NDCG@k of each query."""

    metrics: dict[str, float]
    per_query_ndcg: dict[str, float]


def parse_metric(name: str) -> tuple[str, int]:
    """Split ``"ndcg@10"`` into ``("ndcg", 10)``."""
    family, _, k = name.partition("@")
    if not k.isdigit() or int(k) < 1:
        raise UserError(f"A metric is named like 'ndcg@10', got '{name}'.")
    return family, int(k)


def metric_names(cutoffs: Mapping[str, Sequence[int]]) -> list[str]:
    """``{"ndcg": [5, 10], ...}`` as ``["ndcg@5", "ndcg@10", ...]``."""
    unknown = set(cutoffs) - set(BINARY_FAMILIES)
    empty = [family for family in BINARY_FAMILIES if not cutoffs.get(family)]
    if unknown or empty:
        raise UserError(
            f"The cutoffs must give at least one k for each of {BINARY_FAMILIES} "
            f"and nothing else; unknown: {sorted(unknown)}, missing: {empty}."
        )
    return [f"{family}@{k}" for family in BINARY_FAMILIES for k in cutoffs[family]]


def encode_corpus(
    model: Encoder, texts: Sequence[str], batch_size: int
) -> torch.Tensor:
    """Embed the product texts (a progress bar, then the pace); every
    evaluation of this model reuses them."""
    started = time.perf_counter()
    embeddings = model.encode_document(
        list(texts),
        batch_size=batch_size,
        convert_to_tensor=True,
        show_progress_bar=True,
    )
    log_pace(len(texts), time.perf_counter() - started)
    return embeddings


class _RankingRecorder(InformationRetrievalEvaluator):
    """The evaluator, keeping the ranked hits it scores so that per-query values
    come from exactly the rankings behind its averages."""

    rankings: list[list[dict[str, Any]]]

    def compute_metrics(self, queries_result_list: list[object]) -> dict[str, Any]:
        self.rankings = queries_result_list  # type: ignore[assignment]
        return super().compute_metrics(queries_result_list)


def binary_ndcg(ranked_ids: Sequence[str], relevant: set[str], k: int) -> float:
    """NDCG@k with gain 1 for a relevant product, as the evaluator computes it.

    A relevant product at rank r adds 1/log2(r + 1); the ideal ranking puts all
    ``min(len(relevant), k)`` relevant products first. With one relevant product
    this is 1/log2(r + 1) when it ranks within the top k, else 0.
    """
    dcg = sum(
        1 / np.log2(rank + 1)
        for rank, product_id in enumerate(ranked_ids[:k], start=1)
        if product_id in relevant
    )
    ideal = sum(1 / np.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return float(dcg / ideal)


def binary_ir_metrics(
    model: Encoder,
    *,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    corpus_embeddings: torch.Tensor,
    relevant_docs: Mapping[str, set[str]],
    cutoffs: Mapping[str, Sequence[int]],
    primary_k: int,
    batch_size: int = 64,
) -> BinaryEvaluation:
    """Evaluate ``model`` with ``InformationRetrievalEvaluator`` over a corpus whose
    embeddings (rows in ``corpus`` order) are already computed.

    The per-query NDCG@``primary_k`` is recomputed from the evaluator's own
    ranked hits (sorted by score, ties by product id, as it sorts them) with
    :func:`binary_ndcg`, the same formula, so its mean equals the evaluator's.
    """
    if len(corpus) != len(corpus_embeddings):
        raise ValueError(
            f"{len(corpus_embeddings)} corpus embeddings for {len(corpus)} products."
        )
    missing = [qid for qid in queries if not relevant_docs.get(qid)]
    if missing:
        raise ValueError(
            f"{len(missing)} queries have no relevant product, e.g. {missing[:3]}."
        )
    names = metric_names(cutoffs)
    if f"ndcg@{primary_k}" not in names:
        raise UserError(f"NDCG@{primary_k} is not among the NDCG cutoffs.")
    evaluator = _RankingRecorder(
        queries=dict(queries),
        corpus=dict(corpus),
        relevant_docs={qid: set(docs) for qid, docs in relevant_docs.items()},
        ndcg_at_k=list(cutoffs["ndcg"]),
        mrr_at_k=list(cutoffs["mrr"]),
        accuracy_at_k=list(cutoffs["accuracy"]),
        precision_recall_at_k=list(cutoffs["recall"]),
        # MAP is not reported; a small cutoff keeps the evaluator's top-k short.
        map_at_k=[max(parse_metric(name)[1] for name in names)],
        batch_size=batch_size,
        write_csv=False,
        score_functions={"cosine": cos_sim},
        main_score_function="cosine",
    )
    scores = evaluator.compute_all_metrics(model, corpus_embeddings=corpus_embeddings)
    cosine = scores["cosine"]
    metrics = {}
    for name in names:
        family, k = parse_metric(name)
        metrics[name] = float(cosine[f"{family}@k"][k])
    per_query = {}
    for query_id, hits in zip(evaluator.queries_ids, evaluator.rankings, strict=True):
        ranked = sorted(hits, key=lambda hit: (-hit["score"], hit["corpus_id"]))
        per_query[query_id] = binary_ndcg(
            [hit["corpus_id"] for hit in ranked],
            set(relevant_docs[query_id]),
            primary_k,
        )
    return BinaryEvaluation(metrics=metrics, per_query_ndcg=per_query)


def top_k(
    model: Encoder,
    queries: Sequence[str],
    corpus_embeddings: torch.Tensor,
    k: int,
    batch_size: int = 64,
) -> list[list[tuple[int, float]]]:
    """The ``k`` nearest products of each query by cosine similarity, as
    (row in the corpus, score), best first."""
    if not queries:
        return []
    embeddings = model.encode_query(
        list(queries),
        batch_size=batch_size,
        convert_to_tensor=True,
        show_progress_bar=False,
    )
    hits = semantic_search(
        embeddings, corpus_embeddings, top_k=k, score_function=cos_sim
    )
    return [[(int(h["corpus_id"]), float(h["score"])) for h in row] for row in hits]


def ranked_run(product_ids: Sequence[str]) -> dict[str, float]:
    """A served order as a run for :func:`graded_metrics`: scores that ranx
    cannot reorder (best = highest), whatever the hits' own scores were."""
    return {pid: float(len(product_ids) - rank) for rank, pid in enumerate(product_ids)}


def graded_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per-query graded metrics with ranx: ``{metric: {query_id: value}}``.

    ``qrels`` holds integer judgments (0 = irrelevant); ``run`` the retrieved
    products' scores. NDCG uses linear gains (a product judged 2 gains 2;
    ``ndcg_burges@k`` uses 2^rel - 1), MRR and Recall count every judgment
    above 0 as relevant. Every query of ``qrels`` needs a relevant judgment
    (else its NDCG is undefined) and an entry in ``run``; a query that
    retrieved nothing scores 0.
    """
    no_relevant = [qid for qid, docs in qrels.items() if not any(docs.values())]
    if no_relevant:
        raise ValueError(
            f"{len(no_relevant)} judged queries have no relevant product, "
            f"e.g. {no_relevant[:3]}: drop them first."
        )
    if set(run) != set(qrels):
        raise ValueError("The run and the judgments must cover the same queries.")
    for metric in metrics:
        parse_metric(metric)
    retrieved = [qid for qid in qrels if run[qid]]
    if not retrieved:
        return {metric: dict.fromkeys(qrels, 0.0) for metric in metrics}
    ranx_qrels = Qrels.from_dict(
        {qid: {pid: int(rel) for pid, rel in qrels[qid].items()} for qid in retrieved}
    )
    ranx_run = Run.from_dict(
        {qid: {pid: float(s) for pid, s in run[qid].items()} for qid in retrieved}
    )
    with warnings.catch_warnings():
        # ranx casts its unsigned document indices inside numba; harmless.
        warnings.simplefilter("ignore", NumbaTypeSafetyWarning)
        evaluate(ranx_qrels, ranx_run, list(metrics))
    return {
        metric: {
            qid: float(ranx_run.scores[metric][qid]) if run[qid] else 0.0
            for qid in qrels
        }
        for metric in metrics
    }


def compare(
    before: Mapping[str, float],
    after: Mapping[str, float],
    names: tuple[str, str] = ("baseline", "fine_tuned"),
) -> dict:
    """``{metric: {<before's name>, <after's name>, delta, pct_change}}``, each
    side under the name of what it measured (the base and the fine-tuned
    model, or torch and ONNX); ``pct_change`` is None when ``before`` is 0."""
    first, second = names
    return {
        name: {
            first: before[name],
            second: after[name],
            "delta": after[name] - before[name],
            "pct_change": (
                100 * (after[name] - before[name]) / before[name]
                if before[name]
                else None
            ),
        }
        for name in before
    }
