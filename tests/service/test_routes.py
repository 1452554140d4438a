"""/embed, /search and /health over HTTP (TestClient), with real model and DB."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
from fastapi.testclient import TestClient

from product_search.search.table import SearchOptions
from product_search.service.deps import Served
from product_search.service.encoder import Encoder
from tests.service.conftest import Gated, queued, serving

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


# ---------------------------------------------------------------- /embed


def test_embed_returns_the_models_unit_vectors(client, base_model):
    texts = ["cast iron pan", "running shoes for trail", "dog toy"]

    response = client.post("/embed", json={"texts": texts})

    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["dimension"]) == (MODEL, 384)
    vectors = np.array(body["embeddings"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        vectors, base_model.encode(texts, normalize_embeddings=True), atol=1e-5
    )


def test_a_full_queue_is_a_503_with_retry_after_at_once(torch_backend, deployed_table):
    backend = Gated(torch_backend)
    encoder = Encoder(backend, max_queue_texts=4)

    with TestClient(serving(Served(encoder, deployed_table))) as client:
        try:
            # In the app's event loop: one encode under way, held at the gate,
            # and four texts waiting behind it, as many as may wait.
            encoding = client.portal.call(queued, encoder, ["under way"])
            assert backend.started.wait(timeout=60)
            waiting = client.portal.call(queued, encoder, ["a", "b", "c", "d"])

            embed = client.post("/embed", json={"texts": ["one more"]})
            search = client.post("/search", json={"query": "pan", "mode": "dense"})
            lexical = client.post("/search", json={"query": "pan", "mode": "lexical"})
            health = client.get("/health").json()
        finally:
            backend.gate.set()
        client.portal.call(asyncio.gather, encoding, waiting)
        after = client.post("/embed", json={"texts": ["one more"]})

    for refused in (embed, search):
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["detail"].startswith(
            "4 texts are waiting to be encoded; the limit is 4 (SEARCH_MAX_QUEUE_TEXTS)."
        )
    # BM25 alone encodes nothing.
    assert lexical.status_code == 200
    assert health["batcher"] == {
        "max_batch_texts": 64,
        "max_wait_ms": 0.0,
        "max_queue_texts": 4,
        "queued_texts": 4,
    }
    assert after.status_code == 200
    np.testing.assert_allclose(
        after.json()["embeddings"], torch_backend.encode(["one more"]), atol=1e-6
    )
    assert backend.calls == [["under way"], ["a", "b", "c", "d"], ["one more"]]


# ---------------------------------------------------------------- /search


def test_search_for_a_products_title_finds_that_product_first(
    client, tiny_products, base_model
):
    for product in tiny_products.itertuples():
        response = client.post(
            "/search", json={"query": product.title, "k": 3, "mode": "dense"}
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model"], body["query"], body["k"], body["mode"]) == (
            MODEL, product.title, 3, "dense"
        )  # fmt: skip
        assert len(body["results"]) == 3
        top = body["results"][0]
        assert top["product_id"] == product.product_id
        assert (top["title"], top["brand"], top["category"], top["price"]) == (
            product.title, product.brand, product.category, product.price
        )  # fmt: skip
        scores = [hit["score"] for hit in body["results"]]
        assert scores == sorted(scores, reverse=True)
        query, text = base_model.encode(
            [product.title, product.text], normalize_embeddings=True
        )
        assert top["score"] == pytest.approx(float(query @ text), abs=1e-4)


def test_search_without_k_or_mode_is_hybrid_with_default_k_products(client):
    body = client.post("/search", json={"query": "frying pan"}).json()

    assert (body["k"], body["mode"]) == (2, "hybrid")  # SEARCH_DEFAULT_K: 2
    assert [hit["product_id"] for hit in body["results"]] == ["p2", "p1"]


def test_each_hit_shows_its_rank_and_score_in_each_lane(client, deployed_table):
    query = "cast iron skillet for searing"
    modes = {
        mode: client.post("/search", json={"query": query, "k": 5, "mode": mode})
        for mode in ("hybrid", "dense", "lexical")
    }

    assert {mode: r.status_code for mode, r in modes.items()} == dict.fromkeys(
        modes, 200
    )
    hybrid, dense, lexical = (modes[m].json()["results"] for m in modes)
    # Only the skillet holds "cast", "iron", "skillet" or "sear".
    assert [h["product_id"] for h in lexical] == ["p1"]
    assert (lexical[0]["lexical_rank"], lexical[0]["dense_rank"]) == (1, None)
    assert [h["lexical_rank"] for h in dense] == [None] * 5
    assert [h["dense_rank"] for h in dense] == [1, 2, 3, 4, 5]
    top = hybrid[0]
    assert (top["product_id"], top["dense_rank"], top["lexical_rank"]) == ("p1", 1, 1)
    assert top["lexical_score"] == pytest.approx(lexical[0]["score"])
    assert top["dense_score"] == pytest.approx(dense[0]["score"])
    # RRF with the default options: first in both lanes.
    options = SearchOptions()
    assert top["score"] == pytest.approx(
        (options.dense_weight + options.lexical_weight) / (options.rrf_k + 1)
    )
    assert [h["lexical_rank"] for h in hybrid[1:]] == [None] * 4
    # The table's ranking, through the same code.
    expected = deployed_table.search(query, None, 5, mode="lexical")
    assert [h.product_id for h in expected] == ["p1"]


def test_a_query_without_a_lexical_match_still_gets_dense_results(client):
    hybrid = client.post("/search", json={"query": "zqxv wug", "k": 3}).json()
    lexical = client.post(
        "/search", json={"query": "zqxv wug", "k": 3, "mode": "lexical"}
    ).json()

    assert len(hybrid["results"]) == 3
    assert [h["lexical_rank"] for h in hybrid["results"]] == [None] * 3
    assert [h["dense_rank"] for h in hybrid["results"]] == [1, 2, 3]
    assert lexical["results"] == []


def test_search_without_a_table_is_503_with_a_hint(make_client, make_table):
    client = make_client(make_table())

    response = client.post("/search", json={"query": "pan", "k": 3})

    assert response.status_code == 503
    assert response.json()["detail"].endswith(
        "does not exist; run the deployment pipeline to create it."
    )


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("path", "body", "loc", "message"),
    [
        ("/embed", {"texts": []}, ["body", "texts"], "texts must hold at least one text."),
        ("/embed", {"texts": ["a"] * 5}, ["body", "texts"], "texts holds 5 texts; the limit is 4 (SEARCH_MAX_TEXTS)."),
        ("/embed", {"texts": ["ok", "x" * 61]}, ["body", "texts", 1], "texts has 61 characters; the limit is 60 (SEARCH_MAX_TEXT_CHARS)."),
        ("/embed", {"texts": ["ok", "  "]}, ["body", "texts", 1], "texts must not be empty or blank."),
        ("/embed", {"texts": "one text"}, ["body", "texts"], "Input should be a valid list"),
        ("/embed", {"texts": ["ok", 3]}, ["body", "texts", 1], "Input should be a valid string"),
        ("/embed", {}, ["body", "texts"], "Field required"),
        ("/embed", {"texts": ["ok"], "model": "x"}, ["body", "model"], "Extra inputs are not permitted"),
        ("/search", {"query": ""}, ["body", "query"], "query must not be empty or blank."),
        ("/search", {"query": " \t"}, ["body", "query"], "query must not be empty or blank."),
        ("/search", {"query": "x" * 61, "k": 1}, ["body", "query"], "query has 61 characters; the limit is 60 (SEARCH_MAX_TEXT_CHARS)."),
        ("/search", {"query": "pan", "k": 0}, ["body", "k"], "k must be from 1 to 5 (SEARCH_MAX_K), got 0."),
        ("/search", {"query": "pan", "k": 6}, ["body", "k"], "k must be from 1 to 5 (SEARCH_MAX_K), got 6."),
        ("/search", {"query": "pan", "k": "3"}, ["body", "k"], "Input should be a valid integer"),
        ("/search", {"query": "pan", "k": 2.5}, ["body", "k"], "Input should be a valid integer"),
        ("/search", {"query": ["pan"]}, ["body", "query"], "Input should be a valid string"),
        ("/search", {"k": 3}, ["body", "query"], "Field required"),
        ("/search", {"query": "pan", "mode": "semantic"}, ["body", "mode"], "Input should be 'hybrid', 'dense' or 'lexical'"),
    ],
)  # fmt: skip
def test_bad_input_is_a_422_naming_the_problem(bare_client, path, body, loc, message):
    response = bare_client.post(path, json=body)

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [(e["loc"], e["msg"]) for e in errors] == [(loc, message)]


def test_a_body_that_is_not_json_is_a_422(bare_client):
    response = bare_client.post(
        "/search", content=b"query=pan", headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


# ---------------------------------------------------------------- /health


def test_health_shows_model_and_table_version(client, deployed_table):
    version = deployed_table.info()["version"]

    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert (
        body.pop("table").items()
        >= {
            "name": deployed_table.qualified_name,
            "search_function": f"{deployed_table.qualified_name}_search",
            "version": version,
            "model": MODEL,
            "dimension": 384,
            "vector_type": "vector",
            "row_count": 6,
            "analyzer": "product-text-v1",
            "bm25_k1": 1.2,
            "bm25_b": 0.75,
            "search_options": SearchOptions().model_dump(),
        }.items()
    )
    assert body == {
        "status": "ok",
        "model": MODEL,
        "dimension": 384,
        "backend": "torch",
        "batcher": {
            "max_batch_texts": 64,
            "max_wait_ms": 0.0,
            "max_queue_texts": 1024,
            "queued_texts": 0,
        },
        "database": True,
        "model_matches_table": True,
        "search_options": SearchOptions().model_dump(),
        "reranker": None,
        "reranker_reason": None,
        "promotion": None,
        "api_key_required": False,
        "fallbacks": [],
        "detail": None,
    }


def test_health_shows_the_promotion_gates_last_decision(encoder, deployed_table):
    decision = {
        "deploy": False, "promote": False, "forced": False,
        "reason": "The candidate model is significantly worse than the serving one.",
        "serving_model": MODEL, "candidate_model": "data/06_models/m@v2",
        "metric": "ndcg@10", "queries": "real queries",
        "decided_at": "2026-11-27T06:00:00+00:00", "comparison": {"alpha": 0.05},
    }  # fmt: skip
    served = Served(encoder, deployed_table, promotion=lambda: decision)
    with TestClient(serving(served)) as client:
        body = client.get("/health").json()
    assert body["promotion"] == {
        key: value for key, value in decision.items() if key != "comparison"
    }
    assert body["model"] == MODEL


def test_health_without_a_table(make_client, make_table):
    table = make_table()

    body = make_client(table).get("/health").json()

    assert (body["status"], body["database"], body["table"]) == ("no_table", True, None)
    assert f"Table {table.qualified_name} does not exist yet" in body["detail"]


def test_health_is_503_when_the_database_is_unreachable(make_client, make_table):
    table = make_table(
        credentials={"con": "postgresql+psycopg://postgres@/postgres?host=/nonexistent"}
    )
    client = make_client(table)

    response = client.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"], body["model"]) == ("error", False, MODEL)
    assert "the database is unreachable" in body["detail"]
    assert client.post("/search", json={"query": "pan", "k": 1}).status_code == 503
    assert client.post("/embed", json={"texts": ["pan"]}).status_code == 200


def test_health_is_503_when_the_table_cannot_be_read(
    make_client, make_table, deployed_table
):
    # The deployed table, read as one of another dimension: the database
    # answers, but the table cannot be read.
    misread = make_table(table_name=deployed_table.table_name, dimension=8)
    client = make_client(misread)

    response = client.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["database"], body["table"]) == ("error", True, None)
    assert (
        "holds vectors of dimension 384, but it is configured for 8" in (body["detail"])
    )
    # /search cannot use it either: 503 with the reason, not a 500.
    searched = client.post("/search", json={"query": "pan", "k": 1, "mode": "dense"})
    assert searched.status_code == 503
    assert "holds (8,) vectors" in searched.json()["detail"]


def test_health_flags_a_table_built_by_another_model(
    make_client, make_table, product_index
):
    other = make_table()
    products = product_index.products.assign(model="data/06_models/other@v1")
    other.save(dataclasses.replace(product_index, products=products))

    response = make_client(other).get("/health")

    # Searches answer, but compare vectors of two models: degraded, not down.
    body = response.json()
    assert (response.status_code, body["status"]) == (200, "degraded")
    assert body["table"]["model"] == "data/06_models/other@v1"
    assert body["model_matches_table"] is False
    assert body["fallbacks"] == []
    assert (
        f"holds vectors of data/06_models/other@v1 but the service encodes "
        f"queries with {MODEL}" in body["detail"]
    )
