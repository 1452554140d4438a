"""Indexing a catalog for the search table: each product embedded by a model
(shard by shard, resumably, see :mod:`product_search.search.encoding`) and
analysed for BM25, with the fusion and the reranker that serve with it. The
evaluation builds its tables with it, the deployment the serving one."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from sentence_transformers import SentenceTransformer

from product_search.datasets import model_id
from product_search.errors import UserError
from product_search.search.bm25 import Bm25Params
from product_search.search.encoding import EncodingOptions, encode_catalog
from product_search.search.index import ProductIndex, build_product_index
from product_search.search.shards import ShardStore
from product_search.search.table import SearchOptions

logger = logging.getLogger(__name__)


def embed_products(
    products: pd.DataFrame,
    model: SentenceTransformer,
    params: dict[str, Any],
    shards: ShardStore | None = None,
) -> pd.DataFrame:
    """Encode each product's ``text`` into a unit vector, next to its id, the
    display columns a search result shows, and the id of the model.

    ``params["encoding"]`` (:class:`EncodingOptions`) says how: the shard
    size, and the backend (this process, or actors on Ray). With ``shards``,
    each shard is saved there once encoded and read back by a rerun with the
    same model and products, so a killed run resumes where it stopped.
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
    name = model_id(model)
    embeddings = encode_catalog(
        model,
        name,
        products["product_id"].astype(str).tolist(),
        products["text"].tolist(),
        batch_size=params["batch_size"],
        options=EncodingOptions.from_params(params.get("encoding")),
        store=shards,
    )
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
    shards: ShardStore | None = None,
) -> ProductIndex:
    """The search table's content: each product's vector (see
    :func:`embed_products`, which saves them to ``shards``), the BM25 weights of its analysed ``text``, the
    fusion ``/search`` uses with it (``search_options``, else the project's
    ``search.options``), and the reranker that ships with it (its release
    record, see :meth:`product_search.release.RerankerRelease.record`)."""
    embedded = embed_products(products, model, params, shards)
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
