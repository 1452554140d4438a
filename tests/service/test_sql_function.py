"""What a SQL client (the shop's Java backend, "Option A") gets: /embed with
the query's analysed terms, then the table's search function, which must
answer exactly what /search answers without the reranker; and the filters of
/search and /review."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from product_search.search.analyzer import analyze
from product_search.service.deps import Served
from tests import pg
from tests.service.conftest import LIMITS, serving

QUERIES = ["cast iron pan", "running shoes for trail", "toy for my dog", "earbuds"]
FILTERS = [
    None,
    {"category": ["kitchen", "footwear"]},
    {"price": {"max": 100}},
    {"brand": ["Lodge", "Asics", "Kong"], "price": {"min": 12, "max": 89}},
]


@pytest.fixture
def db():
    engine = pg.engine()
    yield engine
    engine.dispose()


def sql_search(db, function, embedded, k, *, mode, filters):
    """The function called as the Java example calls it: the vector in its
    text form, as JSON gave it, the terms as a text[]."""
    with db.connect() as conn:
        return [
            (row.product_id, row.score, row.product)
            for row in conn.execute(
                text(
                    f"SELECT * FROM {function}(CAST(:vector AS vector), :terms, :k, "
                    "CAST(:filters AS jsonb), :mode)"
                ),
                {
                    "vector": json.dumps(embedded["embeddings"][0]),
                    "terms": embedded["terms"][0],
                    "k": k,
                    "filters": json.dumps(filters or {}),
                    "mode": mode,
                },
            )
        ]


def test_embed_gives_the_analysed_terms_on_request(client):
    plain = client.post("/embed", json={"texts": ["Oak 3/4in. boards"]}).json()
    lexical = client.post(
        "/embed", json={"texts": ["Oak 3/4in. boards"], "include": ["lexical"]}
    ).json()
    two = client.post(
        "/embed", json={"texts": ["oak", "2 x 4"], "include": ["lexical"]}
    ).json()

    assert "terms" not in plain
    assert lexical["terms"] == [["oak", "3/4", "3/4in", "board"]]
    assert lexical["terms"][0] == analyze("Oak 3/4in. boards")
    assert lexical["embeddings"] == plain["embeddings"]
    assert two["terms"] == [["oak"], ["2", "4", "2x4"]]
    refused = client.post("/embed", json={"texts": ["oak"], "include": ["sparse"]})
    assert refused.status_code == 422


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_the_sql_function_answers_what_search_answers(client, deployed_table, db, mode):
    compared = 0
    for query in QUERIES:
        # One query per request, as /search encodes it (a batch pads texts to
        # its longest, which moves a vector by ~1e-7).
        embedded = client.post(
            "/embed", json={"texts": [query], "include": ["lexical"]}
        ).json()
        for filters in FILTERS:
            body = {"query": query, "k": 5, "mode": mode, "rerank": False}
            response = client.post("/search", json=body | {"filters": filters})
            assert response.status_code == 200, response.text
            served = [
                (hit["product_id"], hit["score"]) for hit in response.json()["results"]
            ]
            found = sql_search(
                db,
                deployed_table.qualified_function,
                embedded,
                5,
                mode=mode,
                filters=filters,
            )

            assert [(pid, score) for pid, score, _ in found] == served, (query, filters)
            compared += bool(served)
            for _, _, product in found:
                assert set(product) == {"title", "brand", "category", "price"}
    # Most combinations found something (lexical misses some words).
    assert compared >= 8


def test_search_keeps_only_matching_products_in_every_mode(client):
    for mode in ("hybrid", "dense", "lexical"):
        body = {"query": "pan", "k": 5, "mode": mode}
        hits = client.post(
            "/search", json=body | {"filters": {"category": ["footwear"]}}
        ).json()["results"]
        ranged = client.post(
            "/search", json=body | {"filters": {"price": {"min": 30, "max": 130}}}
        ).json()["results"]

        assert {h["category"] for h in hits} <= {"footwear"}
        assert all(30 <= h["price"] <= 130 for h in ranged)
        if mode != "lexical":
            # The dense lane still fills k from the products the filter keeps.
            assert [h["product_id"] for h in hits] in (["p3", "p4"], ["p4", "p3"])
            assert {h["product_id"] for h in ranged} == {"p2", "p3", "p4"}


def test_a_filter_on_a_column_the_table_lacks_is_a_422_naming_its_columns(client):
    response = client.post(
        "/search", json={"query": "pan", "filters": {"colour": ["red"]}}
    )
    bad_value = client.post(
        "/search", json={"query": "pan", "filters": {"price": ["cheap"]}}
    )
    empty = client.post("/search", json={"query": "pan", "filters": {"brand": []}})
    no_bound = client.post("/search", json={"query": "pan", "filters": {"price": {}}})

    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "type": "value_error",
                "loc": ["body", "filters"],
                "msg": "Cannot filter on colour: the table has no such column. It "
                "has brand, category, price, product_id, title.",
            }
        ]
    }
    assert bad_value.status_code == 422
    assert "cheap" in bad_value.json()["detail"][0]["msg"]
    assert (empty.status_code, no_bound.status_code) == (422, 422)


def test_review_filters_every_column(encoder, deployed_table):
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from product_search.service.settings import ServiceSettings  # noqa: PLC0415

    app = serving(Served(encoder, deployed_table), ServiceSettings(**LIMITS))
    with TestClient(app) as client:
        body = client.post(
            "/review",
            json={"query": "shoes", "k": 3, "filters": {"category": ["kitchen"]}},
        ).json()

    names = [column["name"] for column in body["columns"]]
    assert names == ["dense (served model)", "lexical (BM25)", "hybrid"]
    dense = body["columns"][0]["hits"]
    assert [hit["product_id"] for hit in dense] in (["p1", "p2"], ["p2", "p1"])
    assert body["columns"][1]["hits"] == []  # no kitchen product says "shoes"
