"""The training data both trainings start from: the training pairs joined to
their products' text, checked and counted, and the embedding model's
datasets built from them."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from datasets import Dataset

from product_search.errors import UserError

logger = logging.getLogger(__name__)


def training_pairs(
    train_pairs: pd.DataFrame, products: pd.DataFrame, max_pairs: int | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Join each query to its product's text; drop and count pairs that cannot
    be used (unknown product, empty query, duplicate)."""
    if train_pairs.empty:
        raise UserError(
            "There are no training pairs: run the data_generation pipeline first "
            "or check `train_pairs` in the catalog."
        )
    texts = products.set_index("product_id")["text"]
    pairs = train_pairs.assign(
        query=train_pairs["query"].fillna("").astype(str).str.strip(),
        text=train_pairs["product_id"].map(texts),
    )
    unknown = pairs["text"].isna()
    empty = ~unknown & (pairs["query"] == "")
    duplicate = ~unknown & ~empty & pairs.duplicated(["query", "product_id"])
    report = {
        "input_pairs": len(pairs),
        "unknown_product": int(unknown.sum()),
        "empty_query": int(empty.sum()),
        "duplicate_pair": int(duplicate.sum()),
    }
    if report["unknown_product"]:
        logger.warning(
            "Dropped %d training pairs whose product id is not in the catalog "
            "(e.g. %s)",
            report["unknown_product"],
            pairs.loc[unknown, "product_id"].head(3).tolist(),
        )
    pairs = pairs[~(unknown | empty | duplicate)]
    if max_pairs:
        pairs = logged_first(pairs).head(int(max_pairs))
    if pairs.empty:
        raise UserError(f"No usable training pair is left: {report}.")
    report["used_pairs"] = len(pairs)
    if "source" in pairs:
        report["by_source"] = {
            str(source): int(count)
            for source, count in pairs["source"].value_counts().sort_index().items()
        }
    return pairs.reset_index(drop=True), report


def logged_first(pairs: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` with the search log's first, each source in its order: a cap
    on the pairs keeps the shop's real judgments before generated queries,
    which teach less about real shoppers (bench/results/home_depot.md)."""
    if "source" not in pairs:
        return pairs
    return pairs.sort_values(
        "source", key=lambda source: source != "log", kind="stable"
    )


def training_datasets(
    pairs: pd.DataFrame, negatives: pd.DataFrame, texts: pd.Series
) -> dict[str, Dataset]:
    """``pairs`` (anchor, positive) and, for the pairs whose query has a logged
    negative, ``triplets`` (anchor, positive, negative). A query's negatives
    are dealt out in turn over its positives."""
    negatives = negatives.assign(text=negatives["product_id"].map(texts)).dropna(
        subset=["text"]
    )
    by_query = negatives.groupby("query_id")["text"].agg(list)
    turn = pairs.groupby("query_id").cumcount()
    negative = [
        by_query[qid][i % len(by_query[qid])] if qid in by_query.index else None
        for qid, i in zip(pairs["query_id"], turn, strict=True)
    ]
    has_negative = np.array([n is not None for n in negative], dtype=bool)
    datasets = {}
    plain = pairs[~has_negative]
    if len(plain):
        datasets["pairs"] = Dataset.from_dict(
            {"anchor": plain["query"].tolist(), "positive": plain["text"].tolist()}
        )
    if has_negative.any():
        with_negative = pairs[has_negative]
        datasets["triplets"] = Dataset.from_dict(
            {
                "anchor": with_negative["query"].tolist(),
                "positive": with_negative["text"].tolist(),
                "negative": [n for n in negative if n is not None],
            }
        )
    return datasets
