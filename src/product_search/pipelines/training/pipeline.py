"""Wiring of the training pipeline."""

from kedro.pipeline import Node, Pipeline

from .nodes import train_model


def create_pipeline(**kwargs) -> Pipeline:
    # Only train_pairs reach the trainer: the held-out test queries never do.
    return Pipeline(
        [
            Node(
                train_model,
                inputs=[
                    "train_pairs",
                    "train_negatives",
                    "products",
                    "base_model",
                    "params:training",
                ],
                outputs=["fine_tuned_model", "training_history"],
                name="train_model_node",
            )
        ]
    )
