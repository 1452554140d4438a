"""The deployment pipeline: index_products and its run into a real search table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from product_search.pipelines.deployment import create_pipeline
from product_search.pipelines.deployment.nodes import embed_products, index_products
from tests import pg

CONF = Path(__file__).parents[3] / "conf" / "base"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def params() -> dict:
    with open(CONF / "parameters_deployment.yml") as f:
        return yaml.safe_load(f)["deployment"]


@pytest.fixture
def make_dataset():
    yield from pg.dataset_factory(dimension=384)


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


def test_pipeline_writes_the_products_to_the_search_table(
    tiny_products, base_model, params, make_dataset
):
    table = make_dataset()
    catalog = DataCatalog(
        {
            "products": MemoryDataset(tiny_products),
            "fine_tuned_model": MemoryDataset(base_model, copy_mode="assign"),
            "params:deployment": MemoryDataset(params),
            "params:search": MemoryDataset({"bm25": {"k1": 1.2, "b": 0.75}}),
            "product_embeddings": table,
        }
    )

    SequentialRunner().run(create_pipeline(), catalog)

    stored = table.load().frame()
    assert stored["product_id"].tolist() == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert stored["title"].tolist() == tiny_products["title"].tolist()
    assert stored["price"].tolist() == tiny_products["price"].tolist()
    np.testing.assert_allclose(
        np.stack(stored["embedding"]),
        base_model.encode(tiny_products["text"].tolist(), normalize_embeddings=True),
        atol=1e-6,
    )
    info = table.load().info()
    assert (info["model"], info["dimension"], info["row_count"]) == (MODEL, 384, 6)
    assert (info["analyzer"], info["bm25_k1"], info["bm25_b"]) == (
        "product-text-v1", 1.2, 0.75,
    )  # fmt: skip
