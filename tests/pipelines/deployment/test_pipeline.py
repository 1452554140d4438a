"""The deployment pipeline: index_products and its run into a real search table."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.io.core import Version
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset

from product_search.datasets import (
    CrossEncoderModelDataset,
    OnnxModelDataset,
    SentenceTransformerModelDataset,
)
from product_search.errors import PromotionRefusedError
from product_search.pipelines.deployment import create_pipeline
from product_search.pipelines.deployment.nodes import (
    decide_promotion,
    embed_products,
    index_products,
    reranker_release,
)
from product_search.pipelines.training.nodes import train_model
from product_search.search.table import SearchOptions
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


# The evaluation's verdict on a reranker: it ships.
RERANKER = {
    "model": "data/06_models/reranker@2026-11-27T08.00.00.000Z", "top_n": 50,
    "text_columns": ["title", "brand"], "weight": 0.4, "deploy": True,
    "reason": "Better.",
}  # fmt: skip


def test_only_a_reranker_that_does_no_harm_is_released(caplog):
    assert reranker_release({"search_modes": {"reranker": RERANKER}}) == {
        "model": RERANKER["model"], "top_n": 50, "text_columns": ["title", "brand"],
        "weight": 0.4, "variant": "fp32",
    }  # fmt: skip
    # The evaluation's int8 check chose the variant (and, for fp32, fewer hits).
    checked = RERANKER | {"variant": {"serve": "int8", "top_n": 50}}
    assert reranker_release({"search_modes": {"reranker": checked}})["variant"] == (
        "int8"
    )
    slow = RERANKER | {"variant": {"serve": "fp32", "top_n": 20}}
    assert reranker_release({"search_modes": {"reranker": slow}})["top_n"] == 20
    harmful = RERANKER | {"deploy": False, "reason": "It is significantly worse."}
    assert reranker_release({"search_modes": {"reranker": harmful}}) == {
        "reason": "Not deployed: It is significantly worse."
    }
    assert "not deployed: It is significantly worse." in caplog.text
    assert reranker_release({"search_modes": {}}) == {
        "reason": "No reranker was trained (reranker.enabled: false)."
    }


# A fusion the evaluation tuned for the model.
TUNED = SearchOptions(
    fusion="weighted", dense_weight=0.4, lexical_weight=0.6
).model_dump()


def test_index_products_records_the_fusion_tuned_for_its_model_only(
    tiny_products, base_model, params, caplog
):
    search = {"bm25": {"k1": 0.9, "b": 0.4}, "options": {"rrf_k": 7}}
    tuned = index_products(
        tiny_products, base_model, params, search,
        search_options={"model": MODEL, "options": TUNED},
    )  # fmt: skip
    assert tuned.search_options == TUNED

    stale = index_products(
        tiny_products, base_model, params, search,
        search_options={"model": "data/06_models/fine_tuned_model@old",
                        "options": TUNED},
    )  # fmt: skip
    assert stale.search_options == SearchOptions(rrf_k=7).model_dump()
    assert "not " + MODEL in caplog.text


def _verdict(promote: bool, candidate: str = MODEL) -> dict:
    """The promotion verdict compare_models stores in metrics.json."""
    return {
        "metric": "ndcg@10", "queries": "held-out test queries",
        "serving_model": MODEL, "candidate_model": candidate,
        "serving_value": 0.5, "candidate_value": 0.6 if promote else 0.4,
        "delta": 0.1 if promote else -0.1, "direction": "better" if promote else "worse",
        "significant": True, "min_gain": None, "promote": promote,
        "reason": "The candidate model is significantly "
        + ("better" if promote else "worse") + " than the serving one (made up).",
    }  # fmt: skip


@pytest.fixture(scope="module")
def shipped_reranker(tmp_path_factory, reranker_base) -> dict:
    """The evaluation's verdict on a real (untrained) reranker."""
    path = str(tmp_path_factory.mktemp("reranker") / "reranker")
    # A copy: saving writes into the model's card, and training tests share it.
    CrossEncoderModelDataset(model_name_or_path=path).save(copy.deepcopy(reranker_base))
    return RERANKER | {"model": path}


def _catalog(
    products, model, params, table, serving, *, verdict, decision_path, reranker=None
):
    search_modes = {"reranker": reranker} if reranker else {}
    return DataCatalog(
        {
            "products": MemoryDataset(products),
            "fine_tuned_model": MemoryDataset(model, copy_mode="assign"),
            "base_model": MemoryDataset(model, copy_mode="assign"),
            "metrics": MemoryDataset(
                {"promotion": verdict, "search_modes": search_modes}
            ),
            "test_queries": MemoryDataset(products[:0]),
            "judged_queries": MemoryDataset(products[:0]),
            "relevance_judgments": MemoryDataset(products[:0]),
            "params:evaluation": MemoryDataset({}),
            "params:promotion": MemoryDataset({"force": False}),
            "params:deployment": MemoryDataset(params),
            "params:search": MemoryDataset({"bm25": {"k1": 1.2, "b": 0.75}}),
            "fine_tuned_search_options": MemoryDataset(
                {"model": MODEL, "options": TUNED}
            ),
            "serving_search_table": serving,
            "product_embeddings": table,
            "promotion_decision": JSONDataset(filepath=str(decision_path)),
            "params:onnx": MemoryDataset({"int8": False, "opset": 17}),
            "onnx_model": OnnxModelDataset(path=str(decision_path.parent / "onnx")),
        }
    )


def test_pipeline_writes_the_products_to_the_search_table(
    tiny_products, base_model, params, make_dataset, tmp_path, *, shipped_reranker
):
    table = make_dataset()
    serving = make_dataset(table_name=table.table.spec.table_name, missing_ok=True)
    catalog = _catalog(tiny_products, base_model, params, table, serving,
                       verdict=_verdict(True), decision_path=tmp_path / "d.json",
                       reranker=shipped_reranker)  # fmt: skip

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
    assert info["search_options"] == TUNED
    assert info["reranker"] == reranker_release(
        {"search_modes": {"reranker": shipped_reranker}}
    )
    # The deployed model and its reranker, exported for the service's ONNX backend.
    export = OnnxModelDataset(path=str(tmp_path / "onnx")).load()
    assert (export.model_id, sorted(export.graphs)) == (MODEL, ["fp32"])
    assert (export.reranker.model_id, export.reranker.kind) == (
        shipped_reranker["model"], "reranker",
    )  # fmt: skip


def test_a_refused_candidate_leaves_the_serving_table_and_force_deploys_it(
    tiny_products, base_model, params, make_dataset, tmp_path
):
    table = make_dataset()
    serving = make_dataset(table_name=table.table.spec.table_name, missing_ok=True)
    old = tiny_products.head(2)
    SequentialRunner().run(
        create_pipeline(),
        _catalog(
            old,
            base_model,
            params,
            table,
            serving,
            verdict=_verdict(True),
            decision_path=tmp_path / "first.json",
        ),  # fmt: skip
    )
    before = table.load().info()

    refused = _catalog(tiny_products, base_model, params, table, serving,
                       verdict=_verdict(False, candidate="worse-model"),
                       decision_path=tmp_path / "decision.json")  # fmt: skip
    refused["base_model"] = MemoryDataset(base_model, copy_mode="assign")
    candidate = SentenceTransformerModelDataset(model_name_or_path=MODEL).load()
    candidate.model_card_data.model_id = "worse-model"
    refused["fine_tuned_model"] = MemoryDataset(candidate, copy_mode="assign")
    with pytest.raises(PromotionRefusedError, match=r"Not deployed: The candidate model "
                       r"is significantly worse .* `sentence-transformers/all-MiniLM-L6-v2` "
                       r"keeps serving; run with --params=promotion.force=true"):  # fmt: skip
        SequentialRunner().run(create_pipeline(), refused)
    assert table.load().info() == before
    assert table.load().frame()["product_id"].tolist() == ["p1", "p2"]
    assert refused.load("promotion_decision")["deploy"] is False
    # The serving model's ONNX export stays too.
    assert refused.load("onnx_model").model_id == MODEL

    refused["params:promotion"] = MemoryDataset({"force": True})
    SequentialRunner().run(create_pipeline(), refused)
    assert table.load().info()["model"] == "worse-model"
    assert table.load().info()["row_count"] == 6
    assert refused.load("onnx_model").model_id == "worse-model"
    assert refused.load("onnx_model").reranker is None  # none shipped
    decision = refused.load("promotion_decision")
    assert (decision["deploy"], decision["forced"], decision["promote"]) == (
        True, True, False,
    )  # fmt: skip


def test_metrics_of_another_model_are_refused(tiny_products, base_model, make_dataset):
    with pytest.raises(ValueError, match="judges the model 'other'"):
        decide_promotion(
            metrics={"promotion": _verdict(True, candidate="other")},
            serving_table=make_dataset(missing_ok=True).load(), candidate=base_model,
            base_model=base_model, products=tiny_products, test_queries=None,
            judged_queries=None, relevance_judgments=None, evaluation_params={},
            promotion={},
        )  # fmt: skip


MATERIALS = ["oak wood", "stainless steel", "clear glass", "organic cotton",
             "full grain leather", "recycled plastic", "bamboo", "wool"]  # fmt: skip


def test_gate_compares_with_a_fine_tuned_serving_model_and_refuses_a_worse_one(
    base_model, make_dataset, tmp_path
):
    """The serving model is an earlier fine-tuned version; the candidate was
    trained on shuffled pairs. The gate scores both itself and keeps the old."""
    products = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(8)],
            "title": MATERIALS,
            "text": [f"Storage box made of {m}, 20 litres" for m in MATERIALS],
        }
    )
    queries = pd.DataFrame(
        [(f"q{i}-{j}", t.format(m=m), f"p{i}", "generated")
         for i, m in enumerate(MATERIALS)
         for j, t in enumerate(["{m} box", "storage in {m}", "{m} storage box"])],
        columns=["query_id", "query", "product_id", "source"],
    )  # fmt: skip
    with open(CONF / "parameters_training.yml") as f:
        training = yaml.safe_load(f)["training"]
    training.update(epochs=3, batch_size=8, learning_rate=1e-4, device="cpu")
    no_negatives = queries[:0]
    good, _ = train_model(queries, no_negatives, products, base_model, training)
    shuffled = queries.assign(product_id=queries["product_id"].sample(
        frac=1, random_state=3).to_numpy())  # fmt: skip
    worse, _ = train_model(shuffled, no_negatives, products, base_model, training)

    saved = SentenceTransformerModelDataset(
        model_name_or_path=str(tmp_path / "model"),
        version=Version(load=None, save="2026-11-27T00.00.00.000Z"),
    )
    saved.save(good)
    serving_model = SentenceTransformerModelDataset(
        model_name_or_path=str(tmp_path / "model"), version=Version(None, None)
    ).load()
    serving = make_dataset()
    serving.save(
        index_products(products, serving_model, {"batch_size": 8, "display_columns": ["title"]},
                       {"bm25": {"k1": 1.2, "b": 0.75}})
    )  # fmt: skip
    worse.model_card_data.model_id = "shuffled"
    with open(CONF / "parameters_evaluation.yml") as f:
        evaluation = yaml.safe_load(f)["evaluation"] | {"bootstrap_samples": 200}
    with open(CONF / "parameters_deployment.yml") as f:
        promotion = yaml.safe_load(f)["promotion"]
    no_judged = pd.DataFrame({"query_id": [], "query": []}, dtype=str)
    no_qrels = pd.DataFrame(
        {"query_id": [], "product_id": [], "relevance": []}, dtype=str
    )

    decision = decide_promotion(
        # The evaluation judged the candidate against the base model.
        metrics={"promotion": _verdict(True, candidate="shuffled")},
        serving_table=serving.load(), candidate=worse, base_model=base_model,
        products=products, test_queries=queries, judged_queries=no_judged,
        relevance_judgments=no_qrels, evaluation_params=evaluation,
        promotion=promotion,
    )  # fmt: skip

    assert decision["serving_model"] == f"{tmp_path / 'model'}@2026-11-27T00.00.00.000Z"
    assert decision["candidate_model"] == "shuffled"
    assert decision["direction"] == "worse" and decision["significant"]
    assert decision["deploy"] is False
