"""The relevance judgments as the review page looks them up."""

from __future__ import annotations

import pandas as pd

from product_search.text import normalise_query


def judgments_by_query(
    judged_queries: pd.DataFrame, relevance_judgments: pd.DataFrame
) -> dict[str, dict[str, int]]:
    """The catalog's ``judged_queries`` and ``relevance_judgments`` as
    ``{normalised query: {product_id: relevance}}``, keeping, as the
    evaluation does, only the queries with a product judged relevant."""
    texts = dict(
        zip(
            judged_queries["query_id"].astype(str),
            judged_queries["query"].astype(str),
            strict=True,
        )
    )
    grades: dict[str, dict[str, int]] = {}
    for row in relevance_judgments.itertuples(index=False):
        grade = int(float(row.relevance))
        grades.setdefault(str(row.query_id), {})[str(row.product_id)] = grade
    return {
        normalise_query(texts[query_id]): judged
        for query_id, judged in grades.items()
        if query_id in texts and max(judged.values()) > 0
    }
