"""The data_generation and training pipelines, wired as in the project, on an
in-memory catalog; and the `kedro run` command line on the test environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.framework.project import configure_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow import MlflowClient

from product_search.datasets import AnswerCache
from product_search.pipeline_registry import register_pipelines

ROOT = Path(__file__).parents[2]


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, to inspect intermediates."""

    def _release(self) -> None:
        pass


@pytest.fixture(scope="module", autouse=True)
def _project():
    configure_project("product_search")


def _params(name: str) -> dict:
    with open(ROOT / "conf" / "base" / f"parameters_{name}.yml") as f:
        return yaml.safe_load(f)[name]


def test_data_generation_then_training_on_an_in_memory_catalog(
    tiny_products, base_model, reranker_base, tmp_path
):
    pipelines = register_pipelines()
    pipeline = pipelines["data_generation"] + pipelines["training"]
    generation = _params("data_generation") | {"provider": "offline"}
    training = _params("training") | {
        "epochs": 1,
        "batch_size": 8,
        "max_seq_length": 32,
    }
    raw = tiny_products.drop(columns="text")
    search_log = pd.DataFrame(
        [("pan for steak", "p1", 5), ("pan for steak", "p4", 0), ("dog toy", "p5", 6),
         ("Earbuds", "p6", 6), ("ghost", "p99", 6)],
        columns=["query", "product_id", "relevance"],
    )  # fmt: skip
    catalog = DataCatalog(
        {
            "raw_products": MemoryDataset(raw),
            "search_logs": MemoryDataset(search_log),
            # The one judged query is also in the log: it must not train.
            "judged_queries": MemoryDataset(
                pd.DataFrame({"query_id": ["j1"], "query": ["earbuds!"]})
            ),
            "query_cache": MemoryDataset(AnswerCache(tmp_path), copy_mode="assign"),
            "anthropic_credentials": MemoryDataset({}),
            "base_model": MemoryDataset(base_model, copy_mode="assign"),
            "params:data_generation": MemoryDataset(generation),
            "params:training": MemoryDataset(training),
            "reranker_base": MemoryDataset(reranker_base, copy_mode="assign"),
            "params:reranker": MemoryDataset(
                _params("reranker") | {"batch_size": 8, "device": "cpu"}
            ),
            "params:search": MemoryDataset(_params("search")),
            **{
                name: KeptDataset(copy_mode="assign")
                for name in (
                    "products",
                    "train_pairs",
                    "validation_queries",
                    "test_queries",
                    "fine_tuned_model",
                )
            },
        }
    )
    SequentialRunner().run(pipeline, catalog)

    products = catalog.load("products")
    train, test = catalog.load("train_pairs"), catalog.load("test_queries")
    validation = catalog.load("validation_queries")
    quality = catalog.load("data_quality")
    history = catalog.load("training_history")
    assert products["product_id"].tolist() == raw["product_id"].tolist()
    assert quality["queries"]["input_queries"] == 24
    kept = quality["queries"]["kept_queries"]
    assert len(test) == round(0.2 * kept)
    assert len(validation) == round(0.1 * (kept - len(test)))
    assert set(validation["source"]) == {"generated"}  # 5% of 2 logged: none
    assert train["source"].value_counts().to_dict() == {
        "generated": kept - len(test) - len(validation), "log": 2,
    }  # fmt: skip
    assert set(train["query_id"]).isdisjoint(test["query_id"])
    assert set(train["query_id"]).isdisjoint(validation["query_id"])
    assert quality["search_logs"]["dropped"]["unknown_product"] == 1
    assert quality["query_sources"]["removed_as_judged"] == {
        "generated": 0, "log": 1, "negatives": 0,
    }  # fmt: skip
    assert "earbuds" not in set(train["query"])
    assert history["train_pairs"] == len(train)
    assert history["triplets"] == 1  # pan for steak, with p4 as its negative
    assert catalog.load("fine_tuned_model").encode(["x"]).shape == (1, 384)
    # The reranker trained on the same pairs, after the embedding model.
    reranker = catalog.load("reranker_history")
    assert reranker["trained"]
    assert reranker["examples"]["positive"] == len(train)
    assert reranker["examples"]["logged"] == 1  # p4 for "pan for steak"
    assert catalog.load("reranker").predict([("pan", "skillet")]).shape == (1,)


def test_test_queries_never_reach_training():
    training = register_pipelines()["training"]
    assert "test_queries" not in training.inputs()


def test_default_pipeline_runs_every_pipeline():
    pipelines = register_pipelines()
    names = {"data_generation", "training", "evaluation", "deployment"}
    assert names <= set(pipelines)
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    for name in names:
        assert {n.name for n in pipelines[name].nodes} <= default_nodes


def test_each_pipeline_is_a_namespace_for_its_nodes_only():
    """kedro-viz groups the nodes by namespace; the datasets keep their catalog
    names, so catalogs, `--params` and `--from-inputs` are unchanged."""
    pipelines = register_pipelines()
    names = ("data_generation", "training", "evaluation", "deployment")
    for name in names:
        for node in pipelines[name].nodes:
            assert node.namespace == name, node.name
            assert node.name.startswith(f"{name}.")
    default = pipelines["__default__"]
    groups = default.group_nodes_by("namespace")
    assert {(group.name, group.type) for group in groups} == {
        (name, "namespace") for name in names
    }
    assert not {
        dataset
        for dataset in default.datasets()
        if dataset.startswith(tuple(f"{name}." for name in names))
    }
    assert default.inputs() == {
        "raw_products", "search_logs", "judged_queries", "relevance_judgments",
        "query_cache", "anthropic_credentials", "base_model", "reranker_base",
        "serving_search_table", "embedding_shards", "params:data_generation",
        "params:data_generation.split", "params:training", "params:reranker",
        "params:search", "params:evaluation", "params:promotion", "params:onnx",
        "params:deployment",
    }  # fmt: skip
    assert default.outputs() == {
        "evaluation_report", "metrics_chart", "onnx_model", "per_query_ndcg",
        "product_embeddings", "tracked_metrics", "fine_tuned_model_mlflow",
    }  # fmt: skip


@pytest.mark.parametrize("per_product", [2])
def test_kedro_run_test_env_with_params_override(per_product):
    """The command line contract: `--env=test` writes under data/test and
    `--params` overrides a single parameter."""
    out = ROOT / "data" / "test"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    env.pop("ANTHROPIC_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipeline=data_generation",
         "--env=test", f"--params=data_generation.queries_per_product={per_product}"],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    generated = pd.read_csv(out / "02_intermediate" / "generated_queries.csv")
    quality = json.loads((out / "08_reporting" / "data_quality.json").read_text())
    assert quality["products"]["kept_products"] == 40  # max_products in conf/test
    assert len(generated) == 40 * per_product
    assert generated.groupby("product_id").size().eq(per_product).all()
    # The run is tracked in the test environment's MLflow store, with the
    # parameters it ran with.
    client = MlflowClient(tracking_uri=f"sqlite:///{ROOT / 'data' / 'mlflow-test.db'}")
    experiment = client.get_experiment_by_name("product_search_test")
    [run] = client.search_runs(
        [experiment.experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert run.info.status == "FINISHED"
    assert run.data.params["data_generation.queries_per_product"] == str(per_product)
    assert run.data.params["data_generation.max_products"] == "40"


def test_a_run_that_deploys_says_how_to_start_the_service(caplog):
    from product_search.hooks import ServiceHintHooks  # noqa: PLC0415

    deployment = register_pipelines()["deployment"]
    with caplog.at_level("INFO", logger="product_search.hooks"):
        ServiceHintHooks().after_pipeline_run({"env": "prod"}, deployment)
        ServiceHintHooks().after_pipeline_run(
            {"env": None}, register_pipelines()["training"]
        )
    assert caplog.messages == [
        "The product table is deployed. Start the search service with: "
        "python -m product_search.service --env prod"
    ]
