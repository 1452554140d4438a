"""/search with a reranker: the top hybrid hits reordered by its scores,
unless the request says rerank: false; /health names it."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from product_search.search.rerank import Reranker
from product_search.service.deps import Served
from product_search.service.settings import ServiceSettings
from tests.service.conftest import serving


class Alphabetical:
    """A reranker whose order is known: the product text that sorts last
    alphabetically scores highest. Keeps the pairs it read."""

    def __init__(self) -> None:
        self.read: list[list[tuple[str, str]]] = []

    def predict(self, pairs, **kwargs):
        self.read.append(list(pairs))
        ranks = {text: i for i, text in enumerate(sorted(t for _, t in pairs))}
        return np.array([float(ranks[text]) for _, text in pairs])


@pytest.fixture
def scorer() -> Alphabetical:
    return Alphabetical()


@pytest.fixture
def reranking_client(encoder, deployed_table, scorer):
    reranker = Reranker(scorer, "rerankers/alphabetical@v1", 4, ("title", "brand"))
    with TestClient(
        serving(Served(encoder, deployed_table, reranker=reranker))
    ) as client:
        yield client


def test_search_reranks_the_top_hits_by_the_rerankers_scores(
    reranking_client, scorer, tiny_products
):
    query = {"query": "pan for the kitchen", "k": 3}
    plain = reranking_client.post("/search", json=query | {"rerank": False}).json()
    reranked = reranking_client.post("/search", json=query).json()

    assert (plain["reranked"], reranked["reranked"]) == (False, True)
    assert [h["rerank_score"] for h in plain["results"]] == [None] * 3
    # It read the top 4 hybrid hits (top_n), each as its title and brand.
    [pairs] = scorer.read
    top4 = reranking_client.post(
        "/search", json=query | {"rerank": False, "k": 4}
    ).json()["results"]
    assert pairs == [(query["query"], f"{h['title']} {h['brand']}") for h in top4]
    # The 3 shown are those 4 ordered by the reranker's score.
    by_text = sorted(top4, key=lambda h: f"{h['title']} {h['brand']}", reverse=True)
    assert [h["product_id"] for h in reranked["results"]] == [
        h["product_id"] for h in by_text[:3]
    ]
    assert [h["rerank_score"] for h in reranked["results"]] == [3.0, 2.0, 1.0]
    # Each hit keeps its lanes' evidence.
    by_id = {h["product_id"]: h for h in top4}
    for hit in reranked["results"]:
        original = by_id[hit["product_id"]]
        assert (hit["dense_rank"], hit["lexical_rank"], hit["score"]) == (
            original["dense_rank"], original["lexical_rank"], original["score"],
        )  # fmt: skip


def test_health_names_the_reranker(reranking_client, client):
    assert reranking_client.get("/health").json()["reranker"] == {
        "model": "rerankers/alphabetical@v1",
        "top_n": 4,
        "text_columns": ["title", "brand"],
    }
    assert client.get("/health").json()["reranker"] is None


def test_rerank_top_n_setting_replaces_or_switches_off_the_tables(scorer):
    shipped = Reranker(scorer, "r@v1", 50, ("title",))
    assert ServiceSettings().reranker(shipped) == shipped
    assert ServiceSettings(rerank_top_n=20).reranker(shipped).top_n == 20
    assert ServiceSettings(rerank_top_n=0).reranker(shipped) is None
    assert ServiceSettings(rerank_top_n=20).reranker(None) is None
