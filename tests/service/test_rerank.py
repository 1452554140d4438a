"""/search with a reranker: the top hybrid hits reordered by its scores,
unless the request says rerank: false; /health names it."""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from product_search.datasets import CrossEncoderModelDataset
from product_search.onnx_export import export_onnx
from product_search.search.onnx import OnnxReranker
from product_search.search.rerank import Reranker
from product_search.service.deps import Served
from product_search.service.project import served_reranker
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


def test_the_rerankers_weight_blends_its_score_with_the_hybrid_score(
    encoder, deployed_table, scorer
):
    query = {"query": "pan for the kitchen", "k": 4}
    served = {}
    for weight in (0.0, 1.0):
        reranker = Reranker(scorer, "r@v1", 4, ("title", "brand"), weight=weight)
        with TestClient(
            serving(Served(encoder, deployed_table, reranker=reranker))
        ) as client:
            plain = client.post("/search", json=query | {"rerank": False}).json()
            served[weight] = client.post("/search", json=query).json()["results"]

    ids = [[h["product_id"] for h in served[w]] for w in (0.0, 1.0)]
    # Weight 0 keeps the hybrid order (with the reranker's scores shown);
    # weight 1 is the reranker's order.
    assert ids[0] == [h["product_id"] for h in plain["results"]]
    assert [h["rerank_score"] for h in served[0.0]] != [None] * 4
    assert [h["rerank_score"] for h in served[1.0]] == [3.0, 2.0, 1.0, 0.0]
    assert ids[0] != ids[1]


def test_health_names_the_reranker(reranking_client, client):
    assert reranking_client.get("/health").json()["reranker"] == {
        "model": "rerankers/alphabetical@v1",
        "top_n": 4,
        "text_columns": ["title", "brand"],
        "weight": 1.0,
        "backend": "torch",
    }
    assert client.get("/health").json()["reranker"] is None


def test_rerank_top_n_setting_replaces_or_switches_off_the_tables(scorer):
    shipped = Reranker(scorer, "r@v1", 50, ("title",))
    assert ServiceSettings().reranker(shipped) == shipped
    assert ServiceSettings(rerank_top_n=20).reranker(shipped).top_n == 20
    assert ServiceSettings(rerank_top_n=0).reranker(shipped) is None
    assert ServiceSettings(rerank_top_n=20).reranker(None) is None
    both = ServiceSettings(rerank_top_n=20, rerank_weight=0.3).reranker(shipped)
    assert (both.top_n, both.weight) == (20, 0.3)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        ServiceSettings(rerank_weight=1.5)


def test_the_reranker_runs_with_onnx_runtime_where_the_export_carries_it(
    tmp_path, reranker_base, caplog
):
    model = copy.deepcopy(reranker_base)  # saving writes into the model's card
    path = str(tmp_path / "reranker")
    CrossEncoderModelDataset(model_name_or_path=path).save(model)
    info = {"reranker": {"model": path, "top_n": 5, "text_columns": ["title"],
                         "weight": 0.4}}  # fmt: skip
    export = export_onnx(model, path, int8=True)
    model_export = SimpleNamespace(reranker=export)
    pairs = [("drill", "cordless drill"), ("drill", "cast iron skillet")]

    onnx = served_reranker(info, model_export, ServiceSettings())
    int8 = served_reranker(info, model_export, ServiceSettings(onnx_variant="int8"))
    other = SimpleNamespace(reranker=dataclasses.replace(export, model_id="other@v0"))
    torch = served_reranker(info, other, ServiceSettings())

    assert (onnx.backend, int8.backend, torch.backend) == ("onnx", "onnx-int8", "torch")
    assert isinstance(onnx.model, OnnxReranker)
    assert (onnx.model_id, onnx.top_n, onnx.columns, onnx.weight) == (
        path, 5, ("title",), 0.4,
    )  # fmt: skip
    np.testing.assert_allclose(
        onnx.model.predict(pairs), torch.model.predict(pairs), atol=1e-5
    )
    assert "carries no export of the table's reranker" in caplog.text
    assert served_reranker(info, None).backend == "torch"
    assert served_reranker({"reranker": {}}, model_export) is None


def test_the_variant_the_evaluation_checked_serves_unless_a_setting_names_one(
    tmp_path, reranker_base, caplog
):
    model = copy.deepcopy(reranker_base)
    path = str(tmp_path / "reranker")
    CrossEncoderModelDataset(model_name_or_path=path).save(model)
    shipped = {"model": path, "top_n": 5, "text_columns": ["title"], "weight": 0.4}
    both = SimpleNamespace(reranker=export_onnx(model, path, int8=True))
    fp32_only = SimpleNamespace(reranker=export_onnx(model, path, int8=False))

    def backend(variant, export=both, **settings):
        info = {"reranker": shipped | {"variant": variant}}
        return served_reranker(info, export, ServiceSettings(**settings)).backend

    # The deployment records int8 where its NDCG@10 was within the tolerance.
    assert backend("int8") == "onnx-int8"
    assert backend("fp32") == "onnx"
    assert backend("int8", rerank_variant="fp32") == "onnx"
    assert backend("fp32", rerank_variant="int8") == "onnx-int8"
    assert backend("int8", export=fp32_only) == "onnx"
    assert "has no int8 graph" in caplog.text


def test_a_reranker_of_weight_0_is_not_loaded():
    # Its path does not exist: loading it would fail and say so.
    shipped = {"model": "/nowhere/reranker", "top_n": 50, "text_columns": ["title"],
               "weight": 0.0}  # fmt: skip

    assert served_reranker({"reranker": shipped}) is None
    assert served_reranker({"reranker": {"reason": "Not deployed: worse."}}) is None
    assert ServiceSettings(rerank_weight=0).reranker(RERANKER_OF_WEIGHT) is None


RERANKER_OF_WEIGHT = Reranker(
    model=None, model_id="r", top_n=5, columns=("title",), weight=0.5
)
