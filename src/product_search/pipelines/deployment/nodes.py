"""Nodes of the deployment pipeline: embed the products for the vector table."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from sentence_transformers import SentenceTransformer

from product_search.datasets import model_id

logger = logging.getLogger(__name__)


def embed_products(
    products: pd.DataFrame,
    fine_tuned_model: SentenceTransformer,
    params: dict[str, Any],
) -> pd.DataFrame:
    """Encode each product's ``text`` into a unit vector, next to its id, the
    display columns a search result shows, and the id of the model.

    Unit vectors make cosine similarity a dot product, the ordering the HNSW
    index (``vector_cosine_ops``) serves.
    """
    display_columns = list(params["display_columns"])
    missing = [
        column
        for column in ["product_id", "text", *display_columns]
        if column not in products.columns
    ]
    if missing:
        raise ValueError(
            f"products lacks the column(s) {missing} needed for the vector table; "
            f"it has {list(products.columns)}."
        )
    embeddings = fine_tuned_model.encode(
        products["text"].tolist(),
        batch_size=params["batch_size"],
        normalize_embeddings=True,
        show_progress_bar=True,
        convert_to_numpy=True,
    )
    name = model_id(fine_tuned_model)
    logger.info("Embedded %d products with %s.", len(products), name)
    product_embeddings = products[["product_id", *display_columns]].reset_index(
        drop=True
    )
    return product_embeddings.assign(embedding=list(embeddings), model=name)
