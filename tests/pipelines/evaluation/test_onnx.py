"""The evaluation scores the ONNX export as it scores the torch model."""

from __future__ import annotations

import pandas as pd
import pytest

from product_search.pipelines.evaluation.nodes import evaluate_onnx
from product_search.scoring import build_evaluation_set, evaluate_model

ONNX = {"int8": True, "opset": 17, "evaluate": True, "threads": 1}
# Queries that the tiny catalog does not answer perfectly, so that a change of
# a vector could move a metric.
HARD_QUERIES = [
    ("h1", "pan", "p2"),
    ("h2", "shoes", "p3"),
    ("h3", "something for the kitchen", "p1"),
    ("h4", "audio", "p6"),
]


@pytest.fixture
def evaluation_set(tiny_products, test_queries, judged_queries, relevance_judgments):
    hard = pd.DataFrame(HARD_QUERIES, columns=list(test_queries.columns))
    queries = pd.concat([test_queries, hard], ignore_index=True)
    return build_evaluation_set(
        tiny_products, queries, judged_queries, relevance_judgments
    )


def test_fp32_changes_no_metric_and_int8_is_reported(
    base_model, evaluation_set, evaluation_params
):
    torch_evaluation = evaluate_model(base_model, evaluation_set, evaluation_params)

    result = evaluate_onnx(
        base_model, evaluation_set, torch_evaluation, evaluation_params, ONNX
    )

    assert result["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert sorted(result["variants"]) == ["fp32", "int8"]
    fp32 = result["variants"]["fp32"]
    assert 0 < torch_evaluation.metrics["ndcg@10"] < 1
    for name, change in fp32["metrics"].items():
        assert change["torch"] == torch_evaluation.metrics[name]
        assert change["delta"] == pytest.approx(0, abs=1e-6), name
    assert fp32["real_queries"]["ndcg@10"]["delta"] == pytest.approx(0, abs=1e-6)
    int8 = result["variants"]["int8"]["metrics"]["ndcg@10"]
    assert int8["torch"] == torch_evaluation.metrics["ndcg@10"]
    assert 0 < int8["onnx"] <= 1


def test_onnx_scoring_can_be_turned_off(base_model, evaluation_params):
    assert (
        evaluate_onnx(base_model, {}, {}, evaluation_params, {"evaluate": False}) == {}
    )
