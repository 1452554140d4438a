"""Evaluation nodes without a model: input checks, the comparison, the report's
wording from the numbers, and the chart."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from product_search.pipelines.evaluation.nodes import (
    compare_models,
    plot_metrics,
    promotion_verdict,
    tracked_metrics,
    write_report,
)
from product_search.pipelines.evaluation.tuning import tune_search_options
from product_search.release import FusionChoice
from product_search.scoring import EvaluationSet, ModelEvaluation, build_evaluation_set
from product_search.scoring.modes import SearchModeResults
from product_search.search.table import SearchOptions

ROOT = Path(__file__).parents[3]
NO_JUDGED = pd.DataFrame({"query_id": [], "query": []}, dtype=str)
NO_QRELS = pd.DataFrame({"query_id": [], "product_id": [], "relevance": []}, dtype=str)


def test_evaluation_set_holds_corpus_queries_and_judgments(
    tiny_products, test_queries, judged_queries, relevance_judgments
):
    result = build_evaluation_set(
        tiny_products, test_queries, judged_queries, relevance_judgments
    )

    assert result.corpus.product_id == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert result.corpus.title[2] == "Waterproof Hiking Boots"
    assert result.test_queries.product_id == ["p1", "p2", "p3", "p4", "p5", "p6"]
    # Relevance arrives as text and becomes whole numbers; r3 (all 0) is skipped.
    assert result.judged.qrels == {
        "r1": {"p1": 2, "p2": 1},
        "r2": {"p4": 2, "p3": 0},
    }
    assert result.judged.queries == {"r1": "skillet", "r2": "shoes for jogging"}


def test_evaluation_set_without_judgments_has_none(tiny_products, test_queries):
    result = build_evaluation_set(tiny_products, test_queries, NO_JUDGED, NO_QRELS)

    assert result.judged is None


def test_test_query_of_an_unknown_product_is_refused(tiny_products, test_queries):
    queries = test_queries.assign(product_id=["p1", "p2", "p3", "p4", "p5", "p99"])

    with pytest.raises(ValueError, match=r"1 test queries point to products that are not in `products` \(e.g. \['p99'\]\)"):  # fmt: skip
        build_evaluation_set(tiny_products, queries, NO_JUDGED, NO_QRELS)


def test_repeated_query_ids_are_refused(tiny_products, test_queries):
    queries = test_queries.assign(query_id="same")

    with pytest.raises(
        ValueError, match=r"`test_queries` repeats query ids, e.g. \['same'"
    ):
        build_evaluation_set(tiny_products, queries, NO_JUDGED, NO_QRELS)


def test_empty_test_queries_are_refused(tiny_products, test_queries):
    with pytest.raises(ValueError, match="`test_queries` is empty"):
        build_evaluation_set(tiny_products, test_queries.head(0), NO_JUDGED, NO_QRELS)


def test_judgments_without_their_queries_are_refused(
    tiny_products, test_queries, relevance_judgments
):
    with pytest.raises(ValueError, match="`judged_queries` has 0 rows"):
        build_evaluation_set(
            tiny_products, test_queries, NO_JUDGED, relevance_judgments
        )


def test_bad_judgments_are_refused_with_every_problem_named(
    tiny_products, test_queries, judged_queries, relevance_judgments
):
    qrels = pd.concat(
        [
            relevance_judgments.assign(relevance=["2", "high", "-1", "0", "0"]),
            pd.DataFrame(
                {"query_id": ["r9"], "product_id": ["p1"], "relevance": ["1"]}
            ),
        ]
    )

    with pytest.raises(ValueError) as error:
        build_evaluation_set(tiny_products, test_queries, judged_queries, qrels)

    message = str(error.value)
    assert "relevance that is not a whole number >= 0 (e.g. ['high', '-1'])" in message
    assert "judgments of unknown query ids (e.g. ['r9'])" in message


def _evaluation(
    model: str, ndcg: list[float], real: list[float] | None
) -> ModelEvaluation:
    """An ``evaluate_model`` output with made-up per-query values."""
    query_ids = [f"q{i}" for i in range(len(ndcg))]
    mean = sum(ndcg) / len(ndcg)
    result = {
        "model_id": model,
        "metrics": {"ndcg@10": mean, "accuracy@1": mean / 2, "recall@10": 0.9},
        "per_query_ndcg": dict(zip(query_ids, ndcg, strict=True)),
        "real_queries": None,
        "examples": [
            {
                "query": "a | b",
                "results": [{"product_id": "p1", "title": "T|1", "score": 0.5}],
            }
        ],
    }
    if real is not None:
        per_query = {f"r{i}": value for i, value in enumerate(real)}
        result["real_queries"] = {
            "metrics": {"ndcg@10": sum(real) / len(real)},
            "per_query": {"ndcg@10": per_query},
        }
    return ModelEvaluation.model_validate(result)


def _evaluation_set(n_queries: int, with_real: bool) -> EvaluationSet:
    ids = [f"q{i}" for i in range(n_queries)]
    judged = None
    if with_real:
        judged = {
            "queries": {},
            "qrels": {},
            "counts": {
                "queries": 8,
                "judgments": 40,
                "skipped_without_judgments": 0,
                "skipped_without_relevant": 0,
                "judged_products_not_in_catalog": 0,
            },
        }
    return EvaluationSet.model_validate(
        {
            "corpus": {
                "product_id": ["p1", "p2"],
                "title": ["a", "b"],
                "text": ["a", "b"],
            },
            "test_queries": {
                "query_id": ids,
                "query": ids,
                "product_id": ["p1"] * n_queries,
            },
            "judged": judged,
        }
    )


with open(ROOT / "conf" / "base" / "parameters_deployment.yml") as f:
    PROMOTION = yaml.safe_load(f)["promotion"]


def compare(baseline, fine_tuned, modes, evaluation_set, params, **promotion):
    """The gate's verdict and compare_models with the project's promotion
    parameters, updated."""
    gate = PROMOTION | promotion
    return compare_models(
        baseline_evaluation=baseline,
        fine_tuned_evaluation=fine_tuned,
        search_mode_metrics=modes or None,
        evaluation_set=evaluation_set,
        params=params,
        promotion=gate,
        verdict=promotion_verdict(baseline, fine_tuned, params, gate),
    )


# 16 queries gaining 0.02, 0.04, ... 0.32: distinct non-zero differences, for
# which scipy gives the exact Wilcoxon p-value. Mean gain 0.02 * 136 / 16 = 0.17.
BASELINE_NDCG = [0.5] * 16
TUNED_NDCG = [0.5 + 0.02 * i for i in range(1, 17)]


@pytest.fixture
def report_of(evaluation_params, training_history, generated_queries, data_quality):
    """write_report over the shared records, for a comparison and a split."""

    def report(metrics, baseline, fine_tuned, split_by: str) -> str:
        return write_report(
            metrics=metrics,
            baseline_evaluation=baseline,
            fine_tuned_evaluation=fine_tuned,
            training_history=training_history,
            generated_queries=generated_queries,
            data_quality=data_quality,
            split={"split_by": split_by, "test_size": 0.2, "seed": 42},
            params=evaluation_params,
            search_params={"tuning": {"max_lane_gap": 0.005}},
        )

    return report


def test_compare_models_on_a_clear_gain(evaluation_params):
    baseline = _evaluation("base", BASELINE_NDCG, None)
    fine_tuned = _evaluation("tuned", TUNED_NDCG, None)

    metrics, per_query = compare(
        baseline, fine_tuned, {}, _evaluation_set(16, False), evaluation_params
    )

    assert metrics["metrics"]["ndcg@10"] == pytest.approx(
        {"baseline": 0.5, "fine_tuned": 0.67, "delta": 0.17, "pct_change": 34.0}
    )
    significance = metrics["significance"]
    assert (significance["improved"], significance["unchanged"]) == (16, 0)
    # All 16 differences are positive: the exact two-sided p-value is 2 / 2**16.
    assert significance["wilcoxon_p_value"] == pytest.approx(2 / 2**16)
    assert significance["ci95_low"] < 0.17 < significance["ci95_high"]
    assert 0 < significance["ci95_low"]
    assert per_query["delta"].tolist() == pytest.approx(
        [0.02 * i for i in range(1, 17)]
    )


def test_report_calls_a_clear_gain_significant_and_a_real_loss_a_warning(
    evaluation_params, report_of
):
    baseline = _evaluation("base", BASELINE_NDCG, [0.8] * 8)
    fine_tuned = _evaluation("tuned", TUNED_NDCG, [0.4] * 8)
    metrics, _ = compare(
        baseline, fine_tuned, {}, _evaluation_set(16, True), evaluation_params
    )

    report = report_of(metrics, baseline, fine_tuned, split_by="product")

    assert "**NDCG@10 rose from 0.5000 to 0.6700 (+0.1700, +34.0%)**" in report
    assert (
        "The change is statistically significant (Wilcoxon signed-rank p < 0.001"
        in report
    )
    assert "16 of 16 test queries rank their product higher" in report
    assert "graded NDCG@10 fell from 0.8000 to 0.4000 (-0.4000, -50.0%)" in report
    assert "The gain on synthetic queries does not carry over" in report
    assert "test products are never seen in training" in report
    # A "|" in a query or title is escaped rather than breaking the table.
    assert "**\u201ca \\| b\u201d**" in report
    assert "| 1 | T\\|1 (0.500) | T\\|1 (0.500) |" in report


def test_chart_shows_both_models_per_metric_and_a_real_query_panel(evaluation_params):
    baseline = _evaluation("base", BASELINE_NDCG, [0.8] * 8)
    fine_tuned = _evaluation("tuned", TUNED_NDCG, [0.4] * 8)
    metrics, _ = compare(
        baseline, fine_tuned, {}, _evaluation_set(16, True), evaluation_params
    )

    chart = plot_metrics(metrics)

    synthetic, real = chart.axes
    # ndcg@10, accuracy@1, recall@10: baseline bars, then fine-tuned bars.
    assert [bar.get_height() for bar in synthetic.patches] == pytest.approx(
        [0.5, 0.25, 0.9, 0.67, 0.335, 0.9]
    )
    assert [bar.get_height() for bar in real.patches] == pytest.approx([0.8, 0.4])
    assert [t.get_text() for t in synthetic.get_xticklabels()] == [
        "NDCG@10", "Accuracy@1", "Recall@10",
    ]  # fmt: skip


def test_report_says_to_keep_the_base_model_after_a_significant_loss(
    evaluation_params, report_of
):
    baseline = _evaluation("base", TUNED_NDCG, None)
    fine_tuned = _evaluation("tuned", BASELINE_NDCG, None)
    metrics, _ = compare(
        baseline, fine_tuned, {}, _evaluation_set(16, False), evaluation_params
    )

    report = report_of(metrics, baseline, fine_tuned, split_by="query")

    assert "**NDCG@10 fell from 0.6700 to 0.5000 (-0.1700, -25.4%)**" in report
    assert "keep the base model in production" in report
    assert "Skipped: no human relevance judgments were supplied" in report


SEARCH_MODES = SearchModeResults.model_validate({
    "metrics": ["ndcg@10", "mrr@10"],
    "k": 10,
    "options": {
        "base": {
            "fusion": "rrf", "rrf_k": 60, "dense_weight": 1.0, "lexical_weight": 1.0,
            "dense_depth": 100, "lexical_depth": 100, "ef_search": 100,
        },
        "fine_tuned": {
            "fusion": "weighted", "rrf_k": 5, "dense_weight": 0.4,
            "lexical_weight": 0.6, "dense_depth": 100, "lexical_depth": 100,
            "ef_search": 100,
        },
    },
    "tuning": {
        "base": {
            "model": "base", "options": {"fusion": "rrf", "rrf_k": 60},
            "tuned": False, "reason": "search.tuning.enabled is false",
        },
        "fine_tuned": {
            "model": "tuned", "tuned": True, "metric": "ndcg@10", "objective": "log",
            "options": {
                "fusion": "weighted", "rrf_k": 5, "dense_weight": 0.4,
                "lexical_weight": 0.6,
            },
            "reason": "40 log validation queries; tuning beat the default",
            "validation": {
                "log": {"queries": 40, "dense": 0.5, "lexical": 0.4, "hybrid": 0.55},
            },
        },
    },
    "test_queries": {
        "lexical": {"ndcg@10": 0.7, "mrr@10": 0.6},
        "dense_base": {"ndcg@10": 0.5, "mrr@10": 0.65},
        "hybrid_base": {"ndcg@10": 0.75, "mrr@10": 0.62},
        "dense_fine_tuned": {"ndcg@10": 0.8, "mrr@10": 0.6},
        "hybrid_fine_tuned": {"ndcg@10": 0.79, "mrr@10": 0.6},
    },
    "lane_check": {
        "queries": "test_queries", "metric": "ndcg@10", "served": "hybrid_fine_tuned",
        "below": [],
        "comparisons": {
            "dense": {"mean_delta": -0.01, "wilcoxon_p_value": 0.4,
                      "ci95_low": -0.03, "ci95_high": 0.01},
            "lexical": {"mean_delta": 0.09, "wilcoxon_p_value": 0.001,
                        "ci95_low": 0.05, "ci95_high": 0.12},
        },
    },
})  # fmt: skip


def test_report_and_chart_show_one_row_and_one_bar_per_search_mode(
    evaluation_params, report_of
):
    baseline = _evaluation("base", BASELINE_NDCG, None)
    fine_tuned = _evaluation("tuned", TUNED_NDCG, None)
    metrics, _ = compare(
        baseline, fine_tuned, SEARCH_MODES, _evaluation_set(16, False),
        evaluation_params,
    )  # fmt: skip

    report = report_of(metrics, baseline, fine_tuned, split_by="query")
    chart = plot_metrics(metrics)

    assert metrics["search_modes"] == SEARCH_MODES.model_dump(mode="json")
    section = report[report.index("## Search modes") : report.index("## Key findings")]
    assert (
        "- Base model: reciprocal rank fusion (k = 60), weights dense 1 and lexical "
        "1, 100 dense and 100 lexical candidates; the project's `search.options`: "
        "search.tuning.enabled is false." in section
    )
    assert (
        "- Fine-tuned model: a weighted sum of min-max normalised scores, weights "
        "dense 0.4 and lexical 0.6, 100 dense and 100 lexical candidates; tuned on "
        "the validation queries: 40 log validation queries; tuning beat the default "
        "(40 log queries: hybrid 0.5500, dense 0.5000, lexical 0.4000)." in section
    )
    assert "| Mode | NDCG@10 | MRR@10 |" in section
    assert "| Lexical (BM25) | 0.7000 | 0.6000 |" in section
    assert "| Dense, base model | 0.5000 | **0.6500** |" in section
    assert "| Hybrid, base model | 0.7500 | 0.6200 |" in section
    assert "| Dense, fine-tuned model | **0.8000** | 0.6000 |" in section
    assert "Real shopper queries (graded)" not in section
    # Hybrid base beats both lanes; hybrid fine-tuned trails dense by 0.01.
    assert "with the base model" not in section
    assert (
        "Hybrid search with the fine-tuned model is -0.0100 NDCG@10 below its "
        "dense lane here" in section
    )
    _, modes = chart.axes
    assert [bar.get_height() for bar in modes.patches] == pytest.approx(
        [0.7, 0.5, 0.75, 0.8, 0.79]
    )


def test_gate_verdict_on_test_queries_promotes_a_significant_gain(evaluation_params):
    metrics, _ = compare(
        _evaluation("base", BASELINE_NDCG, None),
        _evaluation("tuned", TUNED_NDCG, None),
        {}, _evaluation_set(16, False), evaluation_params,
    )  # fmt: skip
    verdict = metrics["promotion"]
    assert verdict | {"comparison": None, "reason": None} == {
        "metric": "ndcg@10", "queries": "held-out test queries",
        "serving_model": "base", "candidate_model": "tuned",
        "serving_value": pytest.approx(0.5), "candidate_value": pytest.approx(0.67),
        "delta": pytest.approx(0.17), "direction": "better", "significant": True,
        "min_gain": None, "promote": True, "comparison": None, "reason": None,
    }  # fmt: skip
    assert verdict["reason"].startswith(
        "The candidate model is significantly better than the serving one "
        "(ndcg@10 0.5000 -> 0.6700 (+0.1700) on 16 held-out test queries"
    )


def test_gate_verdict_refuses_a_significant_loss_on_real_queries(
    evaluation_params, report_of
):
    baseline = _evaluation("base", BASELINE_NDCG, [0.8] * 8)
    fine_tuned = _evaluation("tuned", TUNED_NDCG, [0.4] * 8)
    metrics, _ = compare(
        baseline, fine_tuned, {}, _evaluation_set(16, True), evaluation_params
    )
    verdict = metrics["promotion"]
    # Real judgments win over the synthetic gain: 8 of 8 queries lost 0.4.
    assert verdict["queries"] == "real queries"
    assert (verdict["direction"], verdict["significant"], verdict["promote"]) == (
        "worse", True, False,
    )  # fmt: skip
    assert verdict["comparison"]["wilcoxon_p_value"] == pytest.approx(2 / 2**8)
    report = report_of(metrics, baseline, fine_tuned, split_by="query")
    section = report[report.index("## Deployment") :]
    assert "`tuned` does not pass the promotion gate" in section
    assert "keeps `base` serving" in section
    assert "significantly worse than the serving one" in section


@pytest.mark.parametrize(
    ("promotion", "promote", "reason"),
    [
        ({"min_gain": 0.2}, False, "gains less than the required +0.2000"),
        ({"min_gain": 0.1}, True, "significantly better"),
        # p < 2 / 2**16 is out of reach for 16 queries: not significant.
        ({"p_value": 1e-6}, True, "not significantly different"),
    ],  # fmt: skip
)
def test_gate_parameters_set_the_bar(evaluation_params, promotion, promote, reason):
    metrics, _ = compare(
        _evaluation("base", BASELINE_NDCG, None),
        _evaluation("tuned", TUNED_NDCG, None),
        {}, _evaluation_set(16, False), evaluation_params, **promotion,
    )  # fmt: skip
    assert metrics["promotion"]["promote"] is promote
    assert reason in metrics["promotion"]["reason"]


def test_gate_metric_must_be_measured_per_query(evaluation_params):
    with pytest.raises(ValueError, match="promotion.metric 'mrr@10' is not measured"):
        compare(
            _evaluation("base", BASELINE_NDCG, None),
            _evaluation("tuned", TUNED_NDCG, None),
            {}, _evaluation_set(16, False), evaluation_params, metric="mrr@10",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("enabled", "validation", "reason"),
    [
        (False, ["v1"], "search.tuning.enabled is false"),
        (True, [], "there are no validation queries"),
    ],
)
def test_untuned_fusion_is_the_projects_and_says_why(
    base_model, enabled, validation, reason
):
    queries = pd.DataFrame(
        {"query_id": validation, "query": ["pan"] * len(validation),
         "product_id": ["p1"] * len(validation),
         "source": ["generated"] * len(validation)}
    )  # fmt: skip
    search = {"options": {"rrf_k": 9}, "tuning": {"enabled": enabled}}

    # No table is needed to keep the project's fusion.
    result = tune_search_options(None, base_model, queries, search, {"batch_size": 8})

    assert result == FusionChoice(
        model="sentence-transformers/all-MiniLM-L6-v2",
        options=SearchOptions(rrf_k=9),
        tuned=False,
        reason=reason,
    )


def test_every_number_of_the_metrics_and_the_loss_become_mlflow_metrics():
    metrics = {
        "primary_metric": "ndcg@10",
        "metrics": {
            "ndcg@10": {"baseline": 0.5, "fine_tuned": 0.75, "pct_change": None}
        },
        "significance": {"significant": True, "wilcoxon_p_value": 0.01},
        "corpus_size": 6,
    }
    history = {"loss_by_step": [{"step": 1, "loss": 1.25}, {"step": 2, "loss": 0.5}]}

    tracked = tracked_metrics(metrics, history)

    assert tracked == {
        "metrics.ndcg_at_10.baseline": [{"value": 0.5, "step": 0}],
        "metrics.ndcg_at_10.fine_tuned": [{"value": 0.75, "step": 0}],
        "significance.wilcoxon_p_value": [{"value": 0.01, "step": 0}],
        "corpus_size": [{"value": 6.0, "step": 0}],
        "training.loss": [{"value": 1.25, "step": 1}, {"value": 0.5, "step": 2}],
    }


def test_tracked_metrics_land_in_the_active_mlflow_run(tmp_path):
    import mlflow  # noqa: PLC0415
    from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset  # noqa: PLC0415

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracked = tracked_metrics(
        {"metrics": {"ndcg@10": {"fine_tuned": 0.75}}},
        {"loss_by_step": [{"step": 1, "loss": 1.25}, {"step": 2, "loss": 0.5}]},
    )
    with mlflow.start_run() as run:
        MlflowMetricsHistoryDataset().save(tracked)

    client = mlflow.MlflowClient()
    assert client.get_run(run.info.run_id).data.metrics == {
        "metrics.ndcg_at_10.fine_tuned": 0.75,
        "training.loss": 0.5,
    }
    loss = client.get_metric_history(run.info.run_id, "training.loss")
    assert [(m.step, m.value) for m in loss] == [(1, 1.25), (2, 0.5)]


def test_the_catalogs_model_entry_logs_a_model_mlflow_can_load(base_model, tmp_path):
    import mlflow  # noqa: PLC0415
    from kedro.io import DataCatalog  # noqa: PLC0415

    with open(ROOT / "conf" / "base" / "catalog.yml") as f:
        entry = yaml.safe_load(f)["fine_tuned_model_mlflow"]
    dataset = DataCatalog.from_config({"model": entry}).get("model")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run() as run:
        dataset.save(base_model)

    [logged] = mlflow.search_logged_models(
        filter_string=f"source_run_id = '{run.info.run_id}'", output_format="list"
    )
    loaded = mlflow.sentence_transformers.load_model(logged.model_uri)
    text = ["cast iron pan"]
    assert loaded.encode(text) == pytest.approx(base_model.encode(text), abs=1e-6)
