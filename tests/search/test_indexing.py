"""Indexing a catalog for the search table: embedded products, BM25 weights,
and the fusion recorded with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from product_search.search.indexing import embed_products, index_products
from product_search.search.table import SearchOptions

CONF = Path(__file__).parents[2] / "conf" / "base"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def params() -> dict:
    with open(CONF / "parameters_deployment.yml") as f:
        return yaml.safe_load(f)["deployment"]


def test_embed_products_gives_unit_vectors_display_columns_and_model(
    tiny_products, base_model, params
):
    before = tiny_products.copy()

    embedded = embed_products(tiny_products, base_model, params)

    assert list(embedded.columns) == [
        "product_id", "title", "brand", "category", "price", "embedding", "model"
    ]  # fmt: skip
    pd.testing.assert_frame_equal(
        embedded[["product_id", "title", "brand", "category", "price"]],
        tiny_products[["product_id", "title", "brand", "category", "price"]],
    )
    vectors = np.stack(embedded["embedding"])
    assert vectors.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        vectors,
        base_model.encode(tiny_products["text"].tolist(), normalize_embeddings=True),
        atol=1e-5,
    )
    assert set(embedded["model"]) == {MODEL}
    pd.testing.assert_frame_equal(tiny_products, before)  # input untouched


def test_embed_products_names_missing_columns(tiny_products, base_model, params):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['text', 'brand'\]"):
        embed_products(
            tiny_products.drop(columns=["text", "brand"]), base_model, params
        )


def test_index_products_adds_the_bm25_weights_of_the_analysed_text(
    tiny_products, base_model, params
):
    index = index_products(
        tiny_products, base_model, params, {"bm25": {"k1": 0.9, "b": 0.4}}
    )

    assert index.products["product_id"].tolist() == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert index.terms[0][:6] == ["cast", "iron", "skillet", "10", "10in", "lodg"]
    assert (index.lexical.params.k1, index.lexical.params.b) == (0.9, 0.4)
    assert index.analyzer == "product-text-v1"
    skillet = index.lexical.term_ids["skillet"]
    assert list(index.lexical.weights[0]).count(skillet) == 1
    assert all(skillet not in weights for weights in index.lexical.weights[1:])


def test_index_products_records_the_fusion_it_is_given_else_the_projects(
    tiny_products, base_model, params
):
    search = {"bm25": {"k1": 0.9, "b": 0.4}, "options": {"rrf_k": 7}}
    tuned = SearchOptions(fusion="weighted", dense_weight=0.4, lexical_weight=0.6)
    given = index_products(
        tiny_products, base_model, params, search, search_options=tuned.model_dump()
    )
    assert given.search_options == tuned.model_dump()

    default = index_products(tiny_products, base_model, params, search)
    assert default.search_options == SearchOptions(rrf_k=7).model_dump()
