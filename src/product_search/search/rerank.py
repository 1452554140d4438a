"""Reranking: a cross-encoder reads the query together with each of the top
hits and orders them by its score.

The cross-encoder reads a product as its short display text (``columns`` of
the search table, e.g. title and brand), the same text it was trained on, so
that it runs per request: it reads every (query, product) pair anew.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from product_search.search.table import Hit, Mode, SearchOptions, SearchTable


class PairScorer(Protocol):
    """What is needed of a reranker; a ``CrossEncoder`` is one."""

    def predict(self, sentences: list[tuple[str, str]], **kwargs: Any) -> Any: ...


def rerank_text(fields: Mapping[str, Any], columns: Sequence[str]) -> str:
    """A product's text for the reranker: its non-empty ``columns`` in order."""
    parts = []
    for column in columns:
        value = fields.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        text = str(value).strip()
        if text:
            parts.append(text)
    return " ".join(parts)


def blended_order(
    retrieval: Sequence[float], rerank_scores: Sequence[float], weight: float
) -> list[int]:
    """Indices of the hits, best first, by ``weight`` times the reranker's
    score plus ``1 - weight`` times the retrieval score, each min-max
    normalised over the hits; ties keep the retrieval order. With ``weight``
    1 this is the reranker's order, with 0 the retrieval order."""

    def normalised(scores: Sequence[float]) -> np.ndarray:
        values = np.asarray(scores, dtype=float)
        spread = values.max() - values.min() if len(values) else 0.0
        return (values - values.min()) / spread if spread > 0 else np.zeros(len(values))

    blended = weight * normalised(rerank_scores) + (1.0 - weight) * normalised(
        retrieval
    )
    return sorted(range(len(blended)), key=lambda i: (-blended[i], i))


def rerank_scores(
    model: PairScorer,
    query: str,
    hits: Sequence[Hit],
    columns: Sequence[str],
    *,
    batch_size: int = 16,
) -> Any:
    """The reranker's score of each hit for ``query``, each read as its
    ``columns``."""
    if not hits:
        return np.empty(0)
    return model.predict(
        [(query, rerank_text(hit.fields, columns)) for hit in hits],
        batch_size=batch_size,
        show_progress_bar=False,
        convert_to_numpy=True,
    )


def rerank(
    model: PairScorer,
    query: str,
    hits: Sequence[Hit],
    *,
    top_n: int,
    columns: Sequence[str],
    weight: float = 1.0,
    batch_size: int = 16,
) -> list[Hit]:
    """The first ``top_n`` hits ordered by the reranker's score blended with
    their retrieval score (see :func:`blended_order`), each with its
    ``rerank_score``; the rest after them as they were. Pairs are scored in
    batches of ``batch_size``: a batch pads every pair to its longest, so on
    CPU small batches run faster than one batch of all the hits."""
    head, tail = list(hits[:top_n]), list(hits[top_n:])
    if not head:
        return list(hits)
    scores = rerank_scores(model, query, head, columns, batch_size=batch_size)
    order = blended_order([hit.score for hit in head], scores, weight)
    return [replace(head[i], rerank_score=float(scores[i])) for i in order] + tail


@dataclass(frozen=True)
class Reranker:
    """A trained cross-encoder and how it reranks: the first ``top_n`` hits,
    each read as its ``columns`` (the text it was trained on), ordered by its
    score blended with the retrieval score by ``weight`` (1: its score alone)."""

    model: PairScorer
    model_id: str
    top_n: int
    columns: tuple[str, ...]
    weight: float = 1.0

    def describe(self) -> dict[str, Any]:
        """What the table's version records and /health shows."""
        return {
            "model": self.model_id,
            "top_n": self.top_n,
            "text_columns": list(self.columns),
            "weight": self.weight,
        }

    @property
    def backend(self) -> str:
        """What runs it: ``torch``, ``onnx`` or ``onnx-int8``."""
        return getattr(self.model, "name", "torch")


def reranked_search(
    table: SearchTable,
    reranker: Reranker | None,
    query: str,
    vector: Any,
    k: int,
    *,
    mode: Mode,
    options: SearchOptions,
    filters: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """:meth:`SearchTable.search`, then, with a reranker, its first ``top_n``
    hits reranked: the code behind ``/search`` and the evaluation alike."""
    if reranker is None:
        return table.search(
            query, vector, k, mode=mode, options=options, filters=filters
        )
    hits = table.search(
        query, vector, max(k, reranker.top_n), mode=mode, options=options,
        filters=filters,
    )  # fmt: skip
    return rerank(
        reranker.model, query, hits, top_n=reranker.top_n,
        columns=reranker.columns, weight=reranker.weight,
    )[:k]  # fmt: skip
