"""The evaluation set: the catalog, the held-out test queries with their
product, and the judged real queries, checked once and scored by every model."""

from __future__ import annotations

import logging

import pandas as pd

from product_search.errors import UserError
from product_search.scoring.contracts import Corpus, EvaluationSet, Judged, TestQueries

logger = logging.getLogger(__name__)


def require_columns(frame: pd.DataFrame, name: str, columns: list[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise UserError(
            f"`{name}` lacks the column(s) {missing}; it has {list(frame.columns)}."
        )


def _first_duplicates(values: pd.Series) -> list[str]:
    return values[values.duplicated()].head(3).tolist()


def _judgments(
    judged_queries: pd.DataFrame,
    relevance_judgments: pd.DataFrame,
    product_ids: set[str],
) -> Judged | None:
    """Check the human judgments and keep the queries that have a relevant
    product; None when the user supplied none."""
    if judged_queries.empty and relevance_judgments.empty:
        return None
    if judged_queries.empty or relevance_judgments.empty:
        raise UserError(
            f"Human judgments need both files: `judged_queries` has "
            f"{len(judged_queries)} rows and `relevance_judgments` "
            f"{len(relevance_judgments)}."
        )
    require_columns(judged_queries, "judged_queries", ["query_id", "query"])
    require_columns(
        relevance_judgments,
        "relevance_judgments",
        ["query_id", "product_id", "relevance"],
    )
    queries = judged_queries.assign(
        query_id=judged_queries["query_id"].astype(str),
        query=judged_queries["query"].fillna("").astype(str).str.strip(),
    )
    qrels = relevance_judgments.assign(
        query_id=relevance_judgments["query_id"].astype(str),
        product_id=relevance_judgments["product_id"].astype(str),
        relevance=pd.to_numeric(relevance_judgments["relevance"], errors="coerce"),
    )
    relevance = qrels["relevance"]
    checks = {
        "duplicate query ids in judged_queries": (
            queries["query_id"],
            queries["query_id"].duplicated(),
        ),
        "empty queries": (queries["query_id"], queries["query"] == ""),
        "relevance that is not a whole number >= 0": (
            relevance_judgments["relevance"],
            relevance.isna() | (relevance < 0) | (relevance % 1 != 0),
        ),
        "judgments of unknown query ids": (
            qrels["query_id"],
            ~qrels["query_id"].isin(queries["query_id"]),
        ),
        "repeated (query_id, product_id) judgments": (
            qrels["query_id"],
            qrels.duplicated(["query_id", "product_id"]),
        ),
    }
    problems = [
        f"{problem} (e.g. {values[failed].head(3).tolist()})"
        for problem, (values, failed) in checks.items()
        if failed.any()
    ]
    if problems:
        raise UserError(f"The human judgments have {'; '.join(problems)}.")
    has_relevant = qrels.groupby("query_id")["relevance"].max() > 0
    judged = set(qrels["query_id"])
    without_judgments = queries.loc[~queries["query_id"].isin(judged), "query_id"]
    without_relevant = has_relevant.index[~has_relevant]
    kept = queries[queries["query_id"].isin(has_relevant.index[has_relevant])]
    if kept.empty:
        raise UserError(
            "No judged query has a product judged relevant (relevance > 0), so no "
            "real-query metric can be computed."
        )
    kept_qrels = qrels[qrels["query_id"].isin(kept["query_id"])]
    not_in_catalog = int((~kept_qrels["product_id"].isin(product_ids)).sum())
    if len(without_judgments) or len(without_relevant):
        logger.warning(
            "Real-query metrics skip %d judged queries without any judgment and %d "
            "whose judged products are all irrelevant",
            len(without_judgments), len(without_relevant),
        )  # fmt: skip
    if not_in_catalog:
        # Kept: no model can retrieve them, which lowers both models' scores alike.
        logger.warning(
            "%d judgments name products that are not in the catalog", not_in_catalog
        )
    qrels_dict: dict[str, dict[str, int]] = {}
    for row in kept_qrels.itertuples(index=False):
        qrels_dict.setdefault(row.query_id, {})[row.product_id] = int(row.relevance)
    return Judged(
        queries=dict(zip(kept["query_id"], kept["query"], strict=True)),
        qrels=qrels_dict,
        counts={
            "queries": len(kept),
            "judgments": len(kept_qrels),
            "skipped_without_judgments": len(without_judgments),
            "skipped_without_relevant": len(without_relevant),
            "judged_products_not_in_catalog": not_in_catalog,
        },
    )


def build_evaluation_set(
    products: pd.DataFrame,
    test_queries: pd.DataFrame,
    judged_queries: pd.DataFrame,
    relevance_judgments: pd.DataFrame,
) -> EvaluationSet:
    """Check the inputs and gather what both models are scored on: the product
    corpus, the held-out queries with their product, and the judged real queries
    (``judged`` None when there are none)."""
    require_columns(products, "products", ["product_id", "title", "text"])
    require_columns(test_queries, "test_queries", ["query_id", "query", "product_id"])
    if products.empty:
        raise UserError("`products` is empty: there is nothing to search.")
    if test_queries.empty:
        raise UserError(
            "`test_queries` is empty: run the data_generation pipeline first."
        )
    product_ids = products["product_id"].astype(str)
    queries = test_queries.assign(
        query_id=test_queries["query_id"].astype(str),
        product_id=test_queries["product_id"].astype(str),
        query=test_queries["query"].fillna("").astype(str),
    )
    if product_ids.duplicated().any():
        raise UserError(
            f"`products` repeats product ids, e.g. {_first_duplicates(product_ids)}."
        )
    if queries["query_id"].duplicated().any():
        raise UserError(
            "`test_queries` repeats query ids, e.g. "
            f"{_first_duplicates(queries['query_id'])}."
        )
    unknown = queries.loc[~queries["product_id"].isin(product_ids), "product_id"]
    if len(unknown):
        raise UserError(
            f"{len(unknown)} test queries point to products that are not in "
            f"`products` (e.g. {unknown.head(3).tolist()}): were they made from "
            "another catalog?"
        )
    return EvaluationSet(
        corpus=Corpus(
            product_id=product_ids.tolist(),
            title=products["title"].fillna("").astype(str).tolist(),
            text=products["text"].fillna("").astype(str).tolist(),
        ),
        test_queries=TestQueries(
            **{
                column: queries[column].tolist()
                for column in ("query_id", "query", "product_id")
            }
        ),
        judged=_judgments(judged_queries, relevance_judgments, set(product_ids)),
    )
