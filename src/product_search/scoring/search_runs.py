"""Queries through the search table, as ``/search`` serves them, as runs that
the graded metrics score."""

from __future__ import annotations

import numpy as np
from sentence_transformers import SentenceTransformer

from product_search import metrics as m
from product_search.search.index import unit_vectors
from product_search.search.rerank import Reranker, reranked_search
from product_search.search.table import Mode, SearchOptions, SearchTable


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
