"""Indexing a catalog for the search table: each product embedded by a model
and analysed for BM25, with the fusion and the reranker that serve with it.
The evaluation builds its tables with it, the deployment the serving one."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from sentence_transformers import SentenceTransformer

from product_search.datasets import model_id
from product_search.errors import UserError
from product_search.search.bm25 import Bm25Params
from product_search.search.index import ProductIndex, build_product_index, unit_vectors
from product_search.search.table import SearchOptions

logger = logging.getLogger(__name__)


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
    fusion ``/search`` uses with it (``search_options``, else the project's
    ``search.options``), and the reranker that ships with it (its release
    record, see :meth:`product_search.release.RerankerRelease.record`)."""
    embedded = embed_products(products, model, params)
    options = search_options or dict(search_params.get("options") or {})
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
