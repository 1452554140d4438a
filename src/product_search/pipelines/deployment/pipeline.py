"""Wiring of the deployment pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import (
    decide_promotion,
    export_served_model,
    index_for_serving,
    promoted_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                decide_promotion,
                inputs={
                    "manifest": "release_manifest",
                    # The same table as product_embeddings, read before the swap.
                    "serving_table": "serving_search_table",
                    "candidate": "fine_tuned_model",
                    "base_model": "base_model",
                    # What the evaluation scored, to score a serving
                    # fine-tuned model the same way.
                    "products": "products",
                    "test_queries": "test_queries",
                    "judged_queries": "judged_queries",
                    "relevance_judgments": "relevance_judgments",
                    "evaluation_params": "params:evaluation",
                    "promotion": "params:promotion",
                },
                outputs="promotion_decision",
                name="decide_promotion_node",
            ),
            Node(
                promoted_model,
                inputs=["fine_tuned_model", "promotion_decision"],
                outputs="model_to_deploy",
                name="promoted_model_node",
            ),
            Node(
                export_served_model,
                inputs=["model_to_deploy", "params:onnx", "release_manifest"],
                outputs="onnx_model",
                name="export_served_model_node",
            ),
            Node(
                index_for_serving,
                inputs={
                    "products": "products",
                    "model": "model_to_deploy",
                    "params": "params:deployment",
                    "search_params": "params:search",
                    "manifest": "release_manifest",
                    # Where each shard of vectors is saved once encoded.
                    "shards": "embedding_shards",
                },
                outputs="product_embeddings",
                name="index_products_node",
            ),
        ],
        # One stage in kedro-viz; the datasets keep their catalog names.
        namespace="deployment",
        prefix_datasets_with_namespace=False,
    )
