"""Wiring of the deployment pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import index_products


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                index_products,
                inputs=[
                    "products",
                    "fine_tuned_model",
                    "params:deployment",
                    "params:search",
                ],
                outputs="product_embeddings",
                name="index_products_node",
            )
        ]
    )
