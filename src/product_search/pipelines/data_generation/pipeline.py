"""Wiring of the data_generation pipeline."""

from kedro.pipeline import Node, Pipeline

from .products import prepare_products
from .quality import report_data_quality
from .queries import filter_queries, generate_queries
from .search_logs import prepare_search_logs
from .split import mix_query_sources, split_queries


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                prepare_products,
                inputs=["raw_products", "params:data_generation"],
                outputs=["products", "product_report"],
                name="prepare_products_node",
            ),
            Node(
                generate_queries,
                # The key is an input, not the node's look-up in the
                # environment: the same inputs give the same provider.
                inputs=[
                    "products",
                    "query_cache",
                    "params:data_generation",
                    "anthropic_credentials",
                ],
                outputs=["generated_queries", "generation_failures"],
                name="generate_queries_node",
            ),
            Node(
                filter_queries,
                inputs=["generated_queries", "products", "params:data_generation"],
                outputs=["queries", "query_report"],
                name="filter_queries_node",
            ),
            Node(
                prepare_search_logs,
                inputs=["search_logs", "products", "params:data_generation"],
                outputs=["logged_queries", "logged_negatives", "search_log_report"],
                name="prepare_search_logs_node",
            ),
            # The judged queries come in only to be kept out of training.
            Node(
                mix_query_sources,
                inputs=[
                    "queries",
                    "logged_queries",
                    "logged_negatives",
                    "judged_queries",
                    "params:data_generation",
                ],
                outputs=["query_pool", "train_negatives", "source_report"],
                name="mix_query_sources_node",
            ),
            Node(
                split_queries,
                inputs=["query_pool", "params:data_generation"],
                outputs=["train_pairs", "validation_queries", "test_queries"],
                name="split_queries_node",
            ),
            Node(
                report_data_quality,
                inputs=[
                    "product_report",
                    "query_report",
                    "generation_failures",
                    "search_log_report",
                    "source_report",
                ],
                outputs="data_quality",
                name="report_data_quality_node",
            ),
        ],
        # One stage in kedro-viz; the datasets keep their catalog names.
        namespace="data_generation",
        prefix_datasets_with_namespace=False,
    )
