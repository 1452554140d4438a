"""Wiring of the training pipeline."""

from kedro.pipeline import Node, Pipeline

from .embedding import model_to_track, train_model
from .reranker import train_reranker


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
            ),
            Node(
                model_to_track,
                inputs="fine_tuned_model",
                outputs="fine_tuned_model_mlflow",
                name="track_model_node",
            ),
            Node(
                train_reranker,
                inputs={
                    "train_pairs": "train_pairs",
                    "train_negatives": "train_negatives",
                    "products": "products",
                    # Mines its negatives from this model's lanes.
                    "fine_tuned_model": "fine_tuned_model",
                    "reranker_base": "reranker_base",
                    "params": "params:reranker",
                    "search_params": "params:search",
                },
                outputs=["reranker", "reranker_history"],
                name="train_reranker_node",
            ),
        ],
        # One stage in kedro-viz; the datasets keep their catalog names.
        namespace="training",
        prefix_datasets_with_namespace=False,
    )
