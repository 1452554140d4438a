"""The evaluation pipeline, wired as in the project, on an in-memory catalog with
the real base model standing in for both models."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from product_search.datasets import ContractDataset
from product_search.pipelines.evaluation.pipeline import create_pipeline
from tests import pg

METRICS = [
    "ndcg@5", "ndcg@10", "mrr@10", "accuracy@1", "accuracy@5", "accuracy@10",
    "recall@5", "recall@10",
]  # fmt: skip
SECTIONS = [
    "# Product search: fine-tuned embedding model evaluation",
    "## Summary",
    "## The system",
    "## Methodology",
    "## Fine-tuning configuration",
    "## Results",
    "## Search modes",
    "## ONNX Runtime backend",
    "## Key findings",
    "## Search examples",
    "## Real shopper queries",
    "## Limitations",
]


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so that outputs which later
    nodes consume can still be read after the run."""

    def _release(self) -> None:
        pass


OUTPUTS = ["metrics", "per_query_ndcg", "evaluation_report", "metrics_chart"]


class JsonRoundTrip(KeptDataset):
    """Keeps what a ``json.JSONDataset`` would write and read back, as the
    project's catalog persists the evaluation's intermediate results."""

    def save(self, data) -> None:
        super().save(json.dumps(data))

    def load(self):
        return json.loads(super().load())


PERSISTED = ["onnx_metrics"]
# The typed contracts, through the dataset the project's catalog gives them.
CONTRACTS = {
    "search_mode_metrics": "product_search.scoring.modes.SearchModeResults",
    "base_search_options": "product_search.release.FusionChoice",
    "fine_tuned_search_options": "product_search.release.FusionChoice",
    "reranker_options": "product_search.release.RerankerWeight",
    "evaluation_set": "product_search.scoring.EvaluationSet",
    "baseline_evaluation": "product_search.scoring.ModelEvaluation",
    "fine_tuned_evaluation": "product_search.scoring.ModelEvaluation",
    "promotion_verdict": "product_search.release.Verdict",
    "release_manifest": "product_search.release.ReleaseManifest",
}


@pytest.fixture
def make_dataset():
    yield from pg.dataset_factory(dimension=384)


@pytest.fixture
def inputs(
    *,
    make_dataset,
    reranker_base,
    base_model,
    tiny_products,
    test_queries,
    evaluation_params,
    training_history,
    generated_queries,
    data_quality,
) -> dict:
    """Every input of the pipeline but the judgments."""
    return {
        "products": MemoryDataset(tiny_products),
        "test_queries": MemoryDataset(test_queries),
        # The same model twice: every comparison must come out as "no change".
        "base_model": MemoryDataset(base_model, copy_mode="assign"),
        "fine_tuned_model": MemoryDataset(base_model, copy_mode="assign"),
        "training_history": MemoryDataset(training_history),
        "generated_queries": MemoryDataset(generated_queries),
        "data_quality": MemoryDataset(data_quality),
        "params:evaluation": MemoryDataset(evaluation_params),
        "params:promotion": MemoryDataset(
            {"metric": "ndcg@10", "p_value": 0.05, "min_gain": None}
        ),
        "params:deployment": MemoryDataset(
            {"batch_size": 8, "display_columns": ["title"]}
        ),
        "params:search": MemoryDataset(
            {
                "bm25": {"k1": 1.2, "b": 0.75},
                "options": {},
                "tuning": {
                    "enabled": True,
                    "metric": "ndcg@10",
                    "max_lane_gap": 0.005,
                    "grid": {
                        "fusion": ["weighted"],
                        "rrf_k": [5],
                        "dense_weight": [0.2, 0.8],
                    },
                },
            }
        ),  # fmt: skip
        # Two queries the models were not trained on choose their fusion.
        "validation_queries": MemoryDataset(
            pd.DataFrame(
                {
                    "query_id": ["v1", "v2"],
                    "query": ["skillet", "dog toy"],
                    "product_id": ["p1", "p5"],
                    "source": ["generated", "generated"],
                }
            )
        ),  # fmt: skip
        # Untrained: reranking is plumbing here.
        "reranker": MemoryDataset(reranker_base, copy_mode="assign"),
        "reranker_history": MemoryDataset({"trained": False}),
        "params:reranker": MemoryDataset(
            {
                "top_n": 4,
                "text_columns": ["title"],
                "min_gain": None,
                "weight": None,
                "tuning": {"metric": "ndcg@10", "grid": [0, 0.5, 1]},
            }
        ),  # fmt: skip
        "params:onnx": MemoryDataset(
            {"int8": False, "opset": 17, "evaluate": True, "threads": 1}
        ),
        "base_search_table": make_dataset(),
        "fine_tuned_search_table": make_dataset(),
        # Vectors kept in memory only.
        "embedding_shards": MemoryDataset(None),
        "params:data_generation.split": MemoryDataset(
            {"test_size": 0.2, "seed": 42, "split_by": "query"}
        ),
    }


def _run(
    inputs: dict, judged_queries: pd.DataFrame, qrels: pd.DataFrame
) -> DataCatalog:
    catalog = DataCatalog(
        inputs
        | {
            "judged_queries": MemoryDataset(judged_queries),
            "relevance_judgments": MemoryDataset(qrels),
        }
        | {name: KeptDataset() for name in OUTPUTS}
        | {name: JsonRoundTrip() for name in PERSISTED}
        | {
            name: ContractDataset(
                filepath=str(Path(tempfile.mkdtemp()) / f"{name}.json"),
                contract=contract,
            )
            for name, contract in CONTRACTS.items()
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


@pytest.fixture
def without_judgments(inputs) -> DataCatalog:
    """The run of a user with no human judgments (both files absent)."""
    empty_queries = pd.DataFrame({"query_id": [], "query": []}, dtype=str)
    empty_qrels = pd.DataFrame(
        {"query_id": [], "product_id": [], "relevance": []}, dtype=str
    )
    return _run(inputs, empty_queries, empty_qrels)


def test_same_model_twice_shows_no_change(without_judgments, test_queries):
    metrics = without_judgments.load("metrics")
    per_query = without_judgments.load("per_query_ndcg")

    assert metrics["primary_metric"] == "ndcg@10"
    assert metrics["models"] == {
        "baseline": "sentence-transformers/all-MiniLM-L6-v2",
        "fine_tuned": "sentence-transformers/all-MiniLM-L6-v2",
    }
    assert (metrics["corpus_size"], metrics["test_queries"]) == (6, 6)
    assert list(metrics["metrics"]) == METRICS
    for change in metrics["metrics"].values():
        assert change["baseline"] == change["fine_tuned"]
        assert change["delta"] == 0
        assert change["pct_change"] in (0, None)
    # All six products fit in the top 10, so every query finds its product there.
    assert metrics["metrics"]["recall@10"]["baseline"] == 1.0
    assert metrics["metrics"]["accuracy@10"]["baseline"] == 1.0
    assert "real_queries" not in metrics
    verdict = metrics["promotion"]
    assert (verdict["queries"], verdict["direction"], verdict["promote"]) == (
        "held-out test queries", "unchanged", True,
    )  # fmt: skip
    # What the deployment may ship, read back through its typed dataset.
    manifest = without_judgments.load("release_manifest")
    assert manifest.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest.verdict.model_dump() == verdict
    assert (
        manifest.fusion.options.model_dump()
        == (metrics["search_modes"]["options"]["fine_tuned"])
    )
    assert manifest.reranker.record() == {
        "reason": "No reranker was trained (reranker.enabled: false)."
    }
    modes = metrics["search_modes"]
    assert (modes["metrics"], modes["k"]) == (["ndcg@10", "mrr@10", "recall@10"], 10)
    assert list(modes["test_queries"]) == [
        "lexical", "dense_base", "hybrid_base", "dense_fine_tuned", "hybrid_fine_tuned",
    ]  # fmt: skip
    # Each model's fusion: two validation queries are too few to leave the
    # default (min_queries 30), for either model.
    assert modes["options"]["base"] == modes["options"]["fine_tuned"]
    tuning = modes["tuning"]["base"]
    assert (tuning["tuned"], tuning["objective"]) == (False, None)
    assert tuning["reason"] == (
        "the default stays: only 0 log validation queries (fewer than "
        "min_queries 30); the 2 generated validation queries alone do not move "
        "it (pool_sources: false)"
    )
    assert tuning["validation"]["generated"]["queries"] == 2
    assert tuning == modes["tuning"]["fine_tuned"]
    # /search serves hybrid, and it is not significantly below a lane.
    check = modes["lane_check"]
    assert (check["queries"], check["served"], check["below"]) == (
        "test_queries", "hybrid_fine_tuned", [],
    )  # fmt: skip
    scores = modes["test_queries"]
    assert scores["dense_base"] == scores["dense_fine_tuned"]
    assert scores["hybrid_base"] == scores["hybrid_fine_tuned"]
    # Every test query shares words with its product, and six products fit
    # in the top 10.
    for mode_scores in scores.values():
        assert mode_scores["recall@10"] == 1.0
    # Through the database, the dense lane ranks as the exact evaluator does.
    assert scores["dense_base"]["ndcg@10"] == pytest.approx(
        metrics["metrics"]["ndcg@10"]["baseline"], abs=1e-6
    )
    assert metrics["significance"] == {
        "metric": "ndcg@10",
        "queries": 6,
        "improved": 0,
        "worsened": 0,
        "unchanged": 6,
        "mean_delta": 0.0,
        "wilcoxon_p_value": 1.0,
        "paired_t_p_value": 1.0,
        "ci95_low": 0.0,
        "ci95_high": 0.0,
        "bootstrap_samples": 200,
        "seed": 42,
        "alpha": 0.05,
        "significant": False,
    }
    assert list(per_query.columns) == [
        "query_id", "query", "product_id", "ndcg@10_baseline", "ndcg@10_fine_tuned",
        "delta",
    ]  # fmt: skip
    assert per_query["query_id"].tolist() == test_queries["query_id"].tolist()
    assert (per_query["delta"] == 0).all()
    # Recomputed from the evaluator's rankings, so it averages to its NDCG@10.
    assert per_query["ndcg@10_baseline"].mean() == pytest.approx(
        metrics["metrics"]["ndcg@10"]["baseline"], abs=1e-12
    )


def test_report_has_every_section_and_the_sample_queries(without_judgments):
    report = without_judgments.load("evaluation_report")

    positions = [report.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert "| Metric | Baseline | Fine-tuned | Delta | % change |" in report
    assert "| **NDCG@10** |" in report
    assert "No query's score changed, so there is no difference to test." in report
    # Sample queries, each with a side-by-side top-3 table.
    assert report.count("| # | Baseline | Fine-tuned |") == 2
    assert "**\u201cwaterproof boots for hiking\u201d**" in report
    assert "| 1 | Waterproof Hiking Boots (" in report
    # Methodology and training come from the run's records.
    assert "generated by `offline` (`offline-templates-v1`)" in report
    assert "by query, 20% held out with seed 42" in report
    assert "| Loss, first → last step | 1.2500 → 0.5000 |" in report
    assert "offline template generator" in report
    assert "Skipped: no human relevance judgments were supplied" in report
    # The ONNX export scored as torch was: the same model, so no change.
    assert "| NDCG@10 (held-out queries) | 1.0000 | 1.0000 (+0.00000) |" in report


def test_chart_is_a_panel_of_grouped_bars_and_one_of_search_modes(without_judgments):
    chart = without_judgments.load("metrics_chart")
    metrics = without_judgments.load("metrics")

    assert isinstance(chart, Figure)
    axes, modes = chart.axes
    assert len(modes.patches) == 5  # one NDCG@10 bar per search mode
    heights = [bar.get_height() for bar in axes.patches]
    baseline = [metrics["metrics"][name]["baseline"] for name in METRICS]
    # One bar per metric and model: the baseline group, then the fine-tuned one.
    assert heights == pytest.approx(baseline + baseline)


def test_judged_queries_add_a_real_query_section(
    inputs, judged_queries, relevance_judgments
):
    catalog = _run(inputs, judged_queries, relevance_judgments)

    real = catalog.load("metrics")["real_queries"]
    assert {k: real[k] for k in real if k not in ("metrics", "significance")} == {
        "queries": 2,  # r3 has no relevant product
        "judgments": 4,
        "skipped_without_judgments": 0,
        "skipped_without_relevant": 1,
        "judged_products_not_in_catalog": 0,
    }
    assert list(real["metrics"]) == ["ndcg@10", "mrr@10", "recall@10"]
    for change in real["metrics"].values():
        assert change["baseline"] == change["fine_tuned"]
    # Six products all fit in the top 10: every relevant product is found.
    assert real["metrics"]["recall@10"]["baseline"] == 1.0
    assert real["significance"]["wilcoxon_p_value"] == 1.0

    report = catalog.load("evaluation_report")
    real_section = report[report.index("## Real shopper queries") :]
    assert "2 queries with 4 human judgments" in real_section
    assert "1 judged queries were skipped" in real_section
    assert "| **NDCG@10** |" in real_section
    assert len(catalog.load("metrics_chart").axes) == 3
    real_modes = catalog.load("metrics")["search_modes"]["real_queries"]
    # "skillet" finds only the skillet by its words; the pan, judged relevant
    # too, comes from the dense lane.
    assert real_modes["lexical"]["recall@10"] < 1.0
    assert real_modes["hybrid_base"]["recall@10"] == 1.0
    assert "Real shopper queries (graded)" in report
    assert np.isfinite(real["metrics"]["ndcg@10"]["baseline"])


@pytest.mark.parametrize(
    ("max_int8_loss", "serve", "top_n"), [(1.0, "int8", 4), (-1.0, "fp32", 2)]
)
def test_a_trained_reranker_adds_a_reranked_row_a_verdict_and_its_variant(  # noqa: PLR0917
    inputs, judged_queries, relevance_judgments, max_int8_loss, serve, top_n
):
    inputs["reranker_history"] = MemoryDataset({"trained": True})
    params = inputs["params:reranker"].load()
    inputs["params:reranker"] = MemoryDataset(params | {
        "weight": 0.5, "serving": {"max_int8_loss": max_int8_loss, "fp32_top_n": 2},
    })  # fmt: skip
    catalog = _run(inputs, judged_queries, relevance_judgments)

    modes = catalog.load("metrics")["search_modes"]
    for set_name in ("test_queries", "real_queries"):
        assert list(modes[set_name])[-1] == "hybrid_rerank_fine_tuned"
    verdict = modes["reranker"]
    tuned = catalog.load("reranker_options")
    assert (tuned.weight, tuned.tuned) == (0.5, False)
    assert (verdict["model"], verdict["top_n"], verdict["text_columns"]) == (
        "sentence-transformers/all-MiniLM-L6-v2", 4, ["title"],
    )  # fmt: skip
    assert verdict["weight"] == tuned.weight
    # Judged on the real queries, against hybrid search with the same model.
    gate = verdict["verdict"]
    assert (gate["queries"], gate["metric"]) == ("real queries", "ndcg@10")
    real = modes["real_queries"]
    assert gate["delta"] == pytest.approx(
        real["hybrid_rerank_fine_tuned"]["ndcg@10"]
        - real["hybrid_fine_tuned"]["ndcg@10"]
    )
    assert verdict["deploy"] == gate["promote"]
    assert verdict["deploy"] == (not (gate["significant"] and gate["delta"] < 0))
    assert verdict["reason"] == gate["reason"]
    assert verdict["reason"].startswith("Hybrid search reranked is ")
    assert "hybrid search alone (ndcg@10" in verdict["reason"]
    # Its int8 graph scored on the same queries: within the loss, it serves.
    variant = verdict["variant"]
    assert variant["fp32"] == real["hybrid_rerank_fine_tuned"]["ndcg@10"]
    assert variant["int8_change"] == pytest.approx(variant["int8"] - variant["fp32"])
    assert (variant["serve"], variant["top_n"]) == (serve, top_n)
    assert abs(variant["int8_change"]) < 0.2
    report = catalog.load("evaluation_report")
    assert "| Hybrid + rerank, fine-tuned model |" in report
    assert (
        "**Reranker** `sentence-transformers/all-MiniLM-L6-v2` (reads title; "
        f"reranks the top 4 hybrid hits, its score weighing {tuned.weight:g} "
        f"against the hybrid score's {1 - tuned.weight:g})" in report
    )
    assert f"the service runs **{serve}** over the top {top_n} hits" in report


def test_a_reranker_tuned_to_weight_0_is_neither_run_nor_shipped(
    inputs, judged_queries, relevance_judgments
):
    # Two validation queries are too few to leave the default weight, 0.
    inputs["reranker_history"] = MemoryDataset({"trained": True})
    catalog = _run(inputs, judged_queries, relevance_judgments)

    modes = catalog.load("metrics")["search_modes"]
    tuned = catalog.load("reranker_options")
    assert (tuned.weight, tuned.tuned) == (0.0, False)
    assert tuned.reason.startswith("the default stays: only 0 log validation")
    for set_name in ("test_queries", "real_queries"):
        assert "hybrid_rerank_fine_tuned" not in modes[set_name]
    verdict = modes["reranker"]
    assert (verdict["deploy"], verdict["weight"], verdict["verdict"]) == (
        False,
        0.0,
        None,
    )
    assert verdict["reason"].startswith(
        "Its weight against the hybrid score is 0 (the default stays"
    )
    assert "It is not deployed, nor loaded" in catalog.load("evaluation_report")
    # What /search serves without it is checked against its lanes.
    check = modes["lane_check"]
    assert (check["queries"], check["served"]) == ("real_queries", "hybrid_fine_tuned")
    assert set(check["comparisons"]) == {"dense", "lexical"}
