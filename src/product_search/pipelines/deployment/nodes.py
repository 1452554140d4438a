"""Nodes of the deployment pipeline: embed and analyse the products for the
search table."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from sentence_transformers import SentenceTransformer

from product_search.datasets import model_id
from product_search.search.bm25 import Bm25Params
from product_search.search.index import (
    ProductIndex,
    build_product_index,
    unit_vectors,
)

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
        raise ValueError(
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
) -> ProductIndex:
    """The search table's content: each product's vector (see
    :func:`embed_products`) and the BM25 weights of its analysed ``text``."""
    embedded = embed_products(products, model, params)
    index = build_product_index(
        embedded, products["text"].tolist(), Bm25Params(**search_params["bm25"])
    )
    logger.info(
        "Analysed %d products: %d distinct terms, %.1f terms per product.",
        len(products), index.lexical.size, index.lexical.average_length,
    )  # fmt: skip
    return index
