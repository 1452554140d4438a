"""The deployment pipeline: the promotion gate on the release manifest, and its
run into a real search table."""

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
    EmbeddingShardsDataset,
    OnnxModelDataset,
    SentenceTransformerModelDataset,
)
from product_search.errors import PromotionRefusedError
from product_search.pipelines.deployment import create_pipeline
from product_search.pipelines.deployment.nodes import (
    decide_promotion,
    index_for_serving,
)
from product_search.pipelines.evaluation.nodes import reranker_release
from product_search.pipelines.training.embedding import train_model
from product_search.release import FusionChoice, ReleaseManifest, Verdict
from product_search.scoring.modes import RerankerResult
from product_search.search.indexing import index_products
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


# The evaluation's verdict on a reranker: it ships.
RERANKER = {
    "model": "data/06_models/reranker@2026-11-27T08.00.00.000Z", "top_n": 50,
    "text_columns": ["title", "brand"], "weight": 0.4, "deploy": True,
    "reason": "Better.",
}  # fmt: skip

# A fusion the evaluation tuned for the model.
TUNED = SearchOptions(
    fusion="weighted", dense_weight=0.4, lexical_weight=0.6
).model_dump()


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
        "comparison": {},
    }  # fmt: skip


def _manifest(verdict: dict, reranker: dict | None = None) -> ReleaseManifest:
    """The release manifest the evaluation writes for this verdict, fusion and
    reranker verdict."""
    fusion = FusionChoice(model=verdict["candidate_model"], options=TUNED,
                          tuned=True, reason="made up")  # fmt: skip
    return ReleaseManifest(
        model=verdict["candidate_model"],
        verdict=Verdict.model_validate(verdict),
        fusion=fusion,
        reranker=reranker_release(
            RerankerResult.model_validate(reranker) if reranker else None
        ),
    )


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
    return DataCatalog(
        {
            "products": MemoryDataset(products),
            "fine_tuned_model": MemoryDataset(model, copy_mode="assign"),
            "base_model": MemoryDataset(model, copy_mode="assign"),
            "release_manifest": MemoryDataset(_manifest(verdict, reranker)),
            "test_queries": MemoryDataset(products[:0]),
            "judged_queries": MemoryDataset(products[:0]),
            "relevance_judgments": MemoryDataset(products[:0]),
            "params:evaluation": MemoryDataset({}),
            "params:promotion": MemoryDataset({"force": False}),
            "params:deployment": MemoryDataset(params),
            "params:search": MemoryDataset({"bm25": {"k1": 1.2, "b": 0.75}}),
            "serving_search_table": serving,
            "product_embeddings": table,
            "promotion_decision": JSONDataset(filepath=str(decision_path)),
            "params:onnx": MemoryDataset({"int8": False, "opset": 17}),
            "onnx_model": OnnxModelDataset(path=str(decision_path.parent / "onnx")),
            "embedding_shards": EmbeddingShardsDataset(
                path=str(decision_path.parent / "shards")
            ),
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
    # The vectors were saved as one shard (6 products, shards of 50,000).
    [shard] = (tmp_path / "shards").glob("*/shard-*.npz")
    assert shard.name.startswith("shard-00000-")
    info = table.load().info()
    assert (info["model"], info["dimension"], info["row_count"]) == (MODEL, 384, 6)
    assert (info["analyzer"], info["bm25_k1"], info["bm25_b"]) == (
        "product-text-v1", 1.2, 0.75,
    )  # fmt: skip
    assert info["search_options"] == TUNED
    assert info["reranker"] == {
        "model": shipped_reranker["model"], "top_n": 50,
        "text_columns": ["title", "brand"], "weight": 0.4, "variant": "fp32",
    }  # fmt: skip
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


def test_a_manifest_of_another_model_is_refused(
    tiny_products, base_model, params, make_dataset
):
    other = _manifest(_verdict(True, candidate="other"))
    with pytest.raises(ValueError, match="release manifest is for the model 'other'"):
        decide_promotion(
            manifest=other,
            serving_table=make_dataset(missing_ok=True).load(), candidate=base_model,
            base_model=base_model, products=tiny_products, test_queries=None,
            judged_queries=None, relevance_judgments=None, evaluation_params={},
            promotion={},
        )  # fmt: skip
    with pytest.raises(ValueError, match="release manifest is for the model 'other'"):
        index_for_serving(tiny_products, base_model, params, {}, other)


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
        manifest=_manifest(_verdict(True, candidate="shuffled")),
        serving_table=serving.load(), candidate=worse, base_model=base_model,
        products=products, test_queries=queries, judged_queries=no_judged,
        relevance_judgments=no_qrels, evaluation_params=evaluation,
        promotion=promotion,
    )  # fmt: skip

    assert decision["serving_model"] == f"{tmp_path / 'model'}@2026-11-27T00.00.00.000Z"
    assert decision["candidate_model"] == "shuffled"
    assert decision["direction"] == "worse" and decision["significant"]
    assert decision["deploy"] is False
