"""Wiring of the deployment pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import embed_products


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                embed_products,
                inputs=["products", "fine_tuned_model", "params:deployment"],
                outputs="product_embeddings",
                name="embed_products_node",
            )
        ]
    )
