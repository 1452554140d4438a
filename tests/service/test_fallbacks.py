"""What the service serves in place of what the project asked for: each
fallback turns /health ``degraded`` (still 200: the service answers) and says
why; a reranker switched off on purpose is no fallback."""

from __future__ import annotations

import copy
import dataclasses

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from kedro.io import AbstractDataset, DataCatalog, MemoryDataset

from product_search.datasets import CrossEncoderModelDataset
from product_search.onnx_export import export_onnx
from product_search.search.table import DatabaseUnavailableError, SearchTable
from product_search.service import project
from product_search.service.project import serve_project
from product_search.service.settings import ServiceSettings
from tests import pg
from tests.service.conftest import serving

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# A version of a saved model that is not there: loading it fails.
GONE = "{tmp_path}/model@2026-11-28T08.00.00.000Z"
RERANKER = {"top_n": 5, "text_columns": ["title"], "weight": 0.4}


@pytest.fixture(scope="module")
def served_export(onnx_export):
    """The embedding model's export, named as the served base model is."""
    return dataclasses.replace(onnx_export, model_id=MODEL)


@pytest.fixture(scope="module")
def saved_reranker(reranker_base, tmp_path_factory):
    """The untrained reranker saved where a table version can name it, and its
    fp32-only ONNX export under that name."""
    model = copy.deepcopy(reranker_base)  # saving writes into the model's card
    path = str(tmp_path_factory.mktemp("reranker") / "reranker")
    CrossEncoderModelDataset(model_name_or_path=path).save(model)
    return path, export_onnx(model, path, int8=False)


@pytest.fixture
def health(product_index, base_model, monkeypatch):
    """/health of the service that serve_project starts over a fresh table of
    product_index (its vectors' model and its reranker replaced where given)
    and the other catalog entries given (datasets, or values held in memory):
    (served, status code, body)."""
    # Leaving the embedded server would stop the one every test shares.
    monkeypatch.setattr(project, "leave_embedded_server", lambda url: None)
    factory = pg.dataset_factory(dimension=384)
    make = next(factory)

    def start(settings=None, *, model=None, reranker=None, **entries):
        index = product_index
        if model is not None:
            index = dataclasses.replace(index, products=index.products.assign(model=model))  # fmt: skip
        dataset = make()
        dataset.save(dataclasses.replace(index, reranker=reranker))
        catalog = DataCatalog(
            {"product_embeddings": dataset}
            | {
                name: value
                if isinstance(value, AbstractDataset)
                else MemoryDataset(value, copy_mode="assign")
                for name, value in ({"fine_tuned_model": base_model} | entries).items()
            }
        )
        settings = settings or ServiceSettings(backend="torch")
        with serve_project(settings, catalog) as served:
            with TestClient(serving(served)) as client:
                response = client.get("/health")
        return served, response.status_code, response.json()

    yield start
    next(factory, None)


def assert_degraded(code, body, *reasons):
    """200, ``degraded``, and exactly these fallbacks (by a part of each), all
    of them in ``detail``."""
    assert (code, body["status"]) == (200, "degraded"), body
    assert len(body["fallbacks"]) == len(reasons), body["fallbacks"]
    for reason, fallback in zip(reasons, body["fallbacks"], strict=True):
        assert reason in fallback
        assert fallback in body["detail"]


def test_the_catalogs_model_in_place_of_the_tables_is_degraded(health, tmp_path):
    gone = GONE.format(tmp_path=tmp_path)

    served, code, body = health(model=gone)

    assert served.encoder.model_id == MODEL
    assert_degraded(code, body, f"Cannot load {gone}, the model of the table's vectors")
    assert "serving the catalog's model instead" in body["fallbacks"][0]
    assert body["model_matches_table"] is False
    assert (
        f"holds vectors of {gone} but the service encodes queries with"
        in (body["detail"])
    )


def test_a_table_version_unreadable_at_start_up_is_degraded(health, monkeypatch):
    read = SearchTable.info
    calls = []

    def once_unreachable(table):
        calls.append(table)
        if len(calls) == 1:
            raise DatabaseUnavailableError("the database is unreachable")
        return read(table)

    monkeypatch.setattr(SearchTable, "info", once_unreachable)

    _, code, body = health()

    # Read since: the same model, but the fusion and reranker of the table
    # version were never loaded.
    assert body["model_matches_table"] is True
    assert_degraded(code, body, "Cannot read the table's version at start-up")


def test_a_reranker_that_cannot_be_loaded_is_degraded(health, tmp_path):
    gone = GONE.format(tmp_path=tmp_path)

    served, code, body = health(reranker={"model": gone} | RERANKER)

    assert served.reranker is None
    assert_degraded(code, body, f"Cannot load {gone}, the table's reranker")
    assert (body["reranker"], body["reranker_reason"]) == (
        None, f"The reranker {gone} could not be loaded (see fallbacks).",
    )  # fmt: skip


def test_fp32_in_place_of_a_missing_int8_reranker_graph_is_degraded(
    health, served_export, saved_reranker
):
    path, fp32_only = saved_reranker
    export = dataclasses.replace(served_export, reranker=fp32_only)

    _, code, body = health(
        ServiceSettings(),
        reranker={"model": path, "variant": "int8"} | RERANKER,
        onnx_model=export,
    )

    assert (body["backend"], body["reranker"]["backend"]) == ("onnx", "onnx")
    assert_degraded(code, body, f"reranker {path} has no int8 graph")


def test_pytorch_beside_an_export_without_the_reranker_is_degraded(
    health, served_export, saved_reranker
):
    path, _ = saved_reranker

    _, code, body = health(
        ServiceSettings(), reranker={"model": path} | RERANKER, onnx_model=served_export
    )

    assert (body["backend"], body["reranker"]["backend"]) == ("onnx", "torch")
    assert_degraded(code, body, "carries no export of the table's reranker")


def test_pytorch_in_place_of_a_stale_onnx_export_is_degraded(health, onnx_export):
    # An export of another model (all-MiniLM-L6-v2 under another name).
    _, code, body = health(ServiceSettings(), onnx_model=onnx_export)

    assert body["backend"] == "torch"
    assert_degraded(code, body, "The ONNX export is of all-MiniLM-L6-v2, not of")


def test_the_review_page_without_its_base_model_or_judgments_is_degraded(
    health, product_index, tmp_path
):
    for make in pg.dataset_factory(dimension=384):
        base = make()
        products = product_index.products.assign(model=GONE.format(tmp_path=tmp_path))
        base.save(dataclasses.replace(product_index, products=products))
        qrels = pd.DataFrame({"query_id": ["q1"], "product_id": ["p3"], "relevance": [2]})  # fmt: skip

        served, code, body = health(
            base_search_table=base,
            # No "query" column: the judgments cannot be read.
            judged_queries=pd.DataFrame({"query_id": ["q1"], "text": ["boots"]}),
            relevance_judgments=qrels,
        )

    assert (served.base_encoder, served.judgments) == (None, None)
    assert_degraded(
        code,
        body,
        "The review page has no base-model column",
        "The review page shows no judgments",
    )


def test_without_fallbacks_health_is_ok(health, served_export):
    _, code, body = health(ServiceSettings(), onnx_model=served_export)

    assert (code, body["status"], body["backend"]) == (200, "ok", "onnx")
    assert (body["fallbacks"], body["detail"]) == ([], None)
