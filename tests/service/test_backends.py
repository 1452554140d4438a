"""Which backend encodes: ONNX Runtime over the deployment's export of the
served model, else torch; and the ONNX backend behind the routes."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

from product_search.search.onnx import OnnxEncoder
from product_search.service.deps import Served
from product_search.service.encoder import Encoder, TorchBackend, build_backend
from product_search.service.settings import ServiceSettings
from tests.service.conftest import serving

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def served_export(onnx_export):
    """The export, named as the served base model is."""
    return dataclasses.replace(onnx_export, model_id=MODEL)


@pytest.mark.parametrize(
    ("backend", "variant", "expected"),
    [("auto", "fp32", "onnx"), ("onnx", "fp32", "onnx"), ("onnx", "int8", "onnx-int8"),
     ("torch", "fp32", "torch")],
)  # fmt: skip
def test_the_export_of_the_served_model_is_used_unless_torch_is_asked_for(
    base_model, served_export, backend, variant, expected
):
    settings = ServiceSettings(backend=backend, onnx_variant=variant, threads=1)

    chosen = build_backend(settings, base_model, served_export)

    assert chosen.name == expected
    assert chosen.model_id == MODEL


def test_auto_falls_back_to_torch_without_an_export_of_the_served_model(
    base_model, onnx_export, caplog
):
    fallbacks = []
    with caplog.at_level(logging.WARNING):
        chosen = build_backend(ServiceSettings(), base_model, onnx_export, fallbacks)

    assert isinstance(chosen, TorchBackend)
    assert "The ONNX export is of all-MiniLM-L6-v2, not of the served" in caplog.text
    # Kept for /health, which reports it (tests/service/test_fallbacks.py).
    [fallback] = fallbacks
    assert fallback.startswith("The ONNX export is of all-MiniLM-L6-v2, not of the")
    assert "encoding in PyTorch" in fallback
    # Before the first export, auto means torch: no fallback.
    chosen = build_backend(ServiceSettings(), base_model, None, fallbacks)
    assert isinstance(chosen, TorchBackend)
    assert len(fallbacks) == 1


def test_onnx_without_an_export_says_how_to_make_one(base_model, onnx_export):
    whys = [
        (None, "There is no ONNX export of"),
        (onnx_export, "The ONNX export is of"),
    ]
    for export, why in whys:
        with pytest.raises(RuntimeError, match="kedro run --pipeline deployment") as e:
            build_backend(ServiceSettings(backend="onnx"), base_model, export)
        assert why in str(e.value)


def test_embed_and_search_through_onnx_match_torch(
    served_export, deployed_table, torch_backend
):
    encoder = Encoder(OnnxEncoder(served_export, threads=1))
    texts = ["cast iron pan", "running shoes for a marathon"]
    with TestClient(serving(Served(encoder, deployed_table))) as client:
        embedded = client.post("/embed", json={"texts": texts})
        searched = client.post("/search", json={"query": "hiking boots", "k": 1})
        health = client.get("/health").json()

    assert embedded.status_code == 200
    assert embedded.json()["model"] == MODEL
    np.testing.assert_allclose(
        np.array(embedded.json()["embeddings"]), torch_backend.encode(texts), atol=1e-4
    )
    assert searched.status_code == 200
    assert [hit["product_id"] for hit in searched.json()["results"]] == ["p3"]
    assert (health["status"], health["backend"]) == ("ok", "onnx")
    assert health["model_matches_table"] is True
