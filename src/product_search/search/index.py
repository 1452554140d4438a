"""What a search table is built from: the products' vectors and display
columns, and the BM25 weights of their analysed text."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from product_search.search.analyzer import ANALYZER_NAME, analyze
from product_search.search.bm25 import Bm25Params, LexicalIndex, build_index

logger = logging.getLogger(__name__)

ID_COLUMN = "product_id"
VECTOR_COLUMN = "embedding"
MODEL_COLUMN = "model"


class TextEncoder(Protocol):
    """What is needed of a model; a ``SentenceTransformer`` is one."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


def unit_vectors(
    model: TextEncoder,
    texts: list[str],
    batch_size: int,
    *,
    show_progress_bar: bool = False,
) -> np.ndarray:
    """The texts' embeddings scaled to length 1, as float32 rows: products for
    the table and queries for a search alike, so that cosine similarity is
    the dot product the HNSW index (``vector_cosine_ops``) orders by. With
    ``show_progress_bar`` (a whole catalog), a bar while it encodes and a
    line with its pace after."""
    started = time.perf_counter()
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=show_progress_bar,
    )
    if show_progress_bar:
        log_pace(len(texts), time.perf_counter() - started)
    return vectors


def log_pace(count: int, seconds: float) -> None:
    logger.info(
        "Encoded %d texts in %.1f s (%.0f texts/s).",
        count, seconds, count / max(seconds, 1e-9),
    )  # fmt: skip


@dataclass(frozen=True)
class ProductIndex:
    """The rows of a search table and the lexical index of the same products.

    ``products`` holds ``product_id``, display columns, ``embedding`` (one
    vector per row) and optionally ``model``; ``lexical.weights[i]`` belongs to
    ``products.iloc[i]``; ``terms[i]`` are that product's analysed terms.
    ``search_options``: the fusion tuned for the model (``SearchOptions``
    fields), recorded with the table version for ``/search``; None: the
    service's defaults. ``reranker``: the reranker shipped with the table
    (model id, ``top_n``, ``text_columns``), None for none.
    """

    products: pd.DataFrame
    terms: list[list[str]]
    lexical: LexicalIndex
    analyzer: str = ANALYZER_NAME
    search_options: dict[str, Any] | None = None
    reranker: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not len(self.products) == len(self.terms) == len(self.lexical.weights):
            raise ValueError(
                f"{len(self.products)} products, {len(self.terms)} term lists and "
                f"{len(self.lexical.weights)} BM25 rows: they must match one to one."
            )


def build_product_index(
    products: pd.DataFrame,
    texts: Sequence[str],
    bm25: Bm25Params,
    search_options: dict[str, Any] | None = None,
    reranker: dict[str, Any] | None = None,
) -> ProductIndex:
    """Analyse ``texts`` (one per row of ``products``) and weigh them with BM25."""
    if len(products) != len(texts):
        raise ValueError(f"{len(products)} products but {len(texts)} texts.")
    terms = [analyze(text) for text in texts]
    return ProductIndex(
        products=products.reset_index(drop=True),
        terms=terms,
        lexical=build_index(terms, bm25),
        search_options=search_options,
        reranker=reranker,
    )
