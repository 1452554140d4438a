"""Wiring of the evaluation pipeline."""

from kedro.pipeline import Node, Pipeline

from product_search.scoring import build_evaluation_set, evaluate_model
from product_search.search.indexing import index_products

from .nodes import (
    compare_models,
    evaluate_onnx,
    plot_metrics,
    promotion_verdict,
    release_manifest,
    tracked_metrics,
    write_report,
)
from .search_modes import evaluate_search_modes
from .tuning import tune_reranker, tune_search_options


def create_pipeline(**kwargs) -> Pipeline:
    # Each model is loaded once; it encodes the catalog for the exact comparison
    # of the two models and again for its search table.
    return Pipeline(
        [
            Node(
                build_evaluation_set,
                inputs=[
                    "products",
                    "test_queries",
                    "judged_queries",
                    "relevance_judgments",
                ],
                outputs="evaluation_set",
                name="build_evaluation_set_node",
            ),
            Node(
                evaluate_model,
                inputs=["base_model", "evaluation_set", "params:evaluation"],
                outputs="baseline_evaluation",
                name="evaluate_base_model_node",
            ),
            Node(
                evaluate_model,
                inputs=["fine_tuned_model", "evaluation_set", "params:evaluation"],
                outputs="fine_tuned_evaluation",
                name="evaluate_fine_tuned_model_node",
            ),
            # Each model's search table, built as the deployment builds it, so
            # that every search mode is measured through the service's code.
            *(
                Node(
                    index_products,
                    inputs={
                        "products": "products",
                        "model": f"{model}_model",
                        "params": "params:deployment",
                        "search_params": "params:search",
                        # Saved shard by shard: a killed run resumes, and the
                        # deployment reads the fine-tuned model's back.
                        "shards": "embedding_shards",
                    },
                    outputs=f"{model}_search_table",
                    name=f"index_{model}_model_node",
                )
                for model in ("base", "fine_tuned")
            ),
            # Each model's fusion, tuned on queries held out of its training.
            *(
                Node(
                    tune_search_options,
                    inputs={
                        "table": f"{model}_search_table",
                        "model": f"{model}_model",
                        "validation_queries": "validation_queries",
                        "search_params": "params:search",
                        "params": "params:evaluation",
                        "promotion": "params:promotion",
                    },
                    outputs=f"{model}_search_options",
                    name=f"tune_{model}_search_options_node",
                )
                for model in ("base", "fine_tuned")
            ),
            # How much the reranker's score weighs against hybrid's, tuned on
            # the same validation queries.
            Node(
                tune_reranker,
                inputs={
                    "table": "fine_tuned_search_table",
                    "model": "fine_tuned_model",
                    "reranker": "reranker",
                    "reranker_history": "reranker_history",
                    "search_options": "fine_tuned_search_options",
                    "validation_queries": "validation_queries",
                    "reranker_params": "params:reranker",
                    "params": "params:evaluation",
                    "promotion": "params:promotion",
                },
                outputs="reranker_options",
                name="tune_reranker_node",
            ),
            Node(
                evaluate_search_modes,
                inputs={
                    "base_table": "base_search_table",
                    "fine_tuned_table": "fine_tuned_search_table",
                    "base_model": "base_model",
                    "fine_tuned_model": "fine_tuned_model",
                    "base_search_options": "base_search_options",
                    "fine_tuned_search_options": "fine_tuned_search_options",
                    "evaluation_set": "evaluation_set",
                    "params": "params:evaluation",
                    "reranker": "reranker",
                    "reranker_history": "reranker_history",
                    "reranker_params": "params:reranker",
                    "reranker_options": "reranker_options",
                    "promotion": "params:promotion",
                    "onnx": "params:onnx",
                },
                outputs="search_mode_metrics",
                name="evaluate_search_modes_node",
            ),
            # The service's ONNX Runtime backend, scored as torch was.
            Node(
                evaluate_onnx,
                inputs=[
                    "fine_tuned_model",
                    "evaluation_set",
                    "fine_tuned_evaluation",
                    "params:evaluation",
                    "params:onnx",
                ],
                outputs="onnx_metrics",
                name="evaluate_onnx_node",
            ),
            Node(
                promotion_verdict,
                inputs=[
                    "baseline_evaluation",
                    "fine_tuned_evaluation",
                    "params:evaluation",
                    "params:promotion",
                ],
                outputs="promotion_verdict",
                name="promotion_verdict_node",
            ),
            # What the deployment may ship: its only input from the evaluation.
            Node(
                release_manifest,
                inputs=[
                    "promotion_verdict",
                    "fine_tuned_search_options",
                    "search_mode_metrics",
                ],
                outputs="release_manifest",
                name="release_manifest_node",
            ),
            Node(
                compare_models,
                inputs={
                    "baseline_evaluation": "baseline_evaluation",
                    "fine_tuned_evaluation": "fine_tuned_evaluation",
                    "search_mode_metrics": "search_mode_metrics",
                    "evaluation_set": "evaluation_set",
                    "params": "params:evaluation",
                    "promotion": "params:promotion",
                    "verdict": "promotion_verdict",
                    "onnx_metrics": "onnx_metrics",
                },
                outputs=["metrics", "per_query_ndcg"],
                name="compare_models_node",
            ),
            Node(
                write_report,
                inputs={
                    "metrics": "metrics",
                    "baseline_evaluation": "baseline_evaluation",
                    "fine_tuned_evaluation": "fine_tuned_evaluation",
                    "training_history": "training_history",
                    "generated_queries": "generated_queries",
                    "data_quality": "data_quality",
                    # How the test queries were held out, for the methodology.
                    "split": "params:data_generation.split",
                    "params": "params:evaluation",
                    "search_params": "params:search",
                },
                outputs="evaluation_report",
                name="write_report_node",
            ),
            Node(
                plot_metrics,
                inputs="metrics",
                outputs="metrics_chart",
                name="plot_metrics_node",
            ),
            Node(
                tracked_metrics,
                inputs=["metrics", "training_history"],
                outputs="tracked_metrics",
                name="track_metrics_node",
            ),
        ],
        # One stage in kedro-viz; the datasets keep their catalog names.
        namespace="evaluation",
        prefix_datasets_with_namespace=False,
    )
