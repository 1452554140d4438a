"""Node that turns the shop's search log into positive and hard-negative
(query, product) pairs."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pandas as pd

from product_search.errors import UserError
from product_search.text import normalise_query

logger = logging.getLogger(__name__)

#: The columns of a (query, product) pair, logged or generated.
QUERY_PAIR_COLUMNS = ["query_id", "query", "product_id"]
LOG_COLUMNS = ("query", "product_id", "relevance")


def _log_query_id(query: str) -> str:
    # Stable across log updates: the same query keeps its id.
    return "log-" + hashlib.sha1(query.encode()).hexdigest()[:12]


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=str) for column in columns})


def prepare_search_logs(
    search_logs: pd.DataFrame, products: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The shop's search log as training data: a (query, product) whose
    ``relevance`` (a judgment or an event count such as clicks, summed or maxed
    over repeated rows) reaches ``positive_min`` is a positive pair, one at or
    below ``negative_max`` a hard negative. Rows naming a product that is not in
    the catalog are counted and dropped. An absent log gives empty tables."""
    options = params["search_logs"]
    if search_logs.empty:
        return _empty(QUERY_PAIR_COLUMNS), _empty(QUERY_PAIR_COLUMNS), {"input_rows": 0}
    mapping = {
        ours: (options.get("columns") or {}).get(ours, ours) for ours in LOG_COLUMNS
    }
    missing = [
        f"'{theirs}' (for {ours})" for ours, theirs in mapping.items()
        if theirs not in search_logs.columns
    ]  # fmt: skip
    if missing:
        raise UserError(
            f"The search log lacks the column(s) {', '.join(missing)}. It has: "
            f"{list(search_logs.columns)}. Map your column names under "
            "`data_generation.search_logs.columns` ({our_name: your_name})."
        )
    positive_min = float(options["positive_min"])
    negative_max = options.get("negative_max")
    if negative_max is not None and float(negative_max) >= positive_min:
        raise UserError(
            f"search_logs.negative_max ({negative_max}) must be below positive_min "
            f"({positive_min}): a pair cannot be both."
        )
    aggregate = options.get("aggregate", "max")
    if aggregate not in ("max", "sum"):
        raise UserError(
            f"search_logs.aggregate must be 'max' (judgments) or 'sum' (event "
            f"counts), got '{aggregate}'."
        )
    logs = pd.DataFrame(
        {
            "query": search_logs[mapping["query"]].fillna("").map(normalise_query),
            "product_id": search_logs[mapping["product_id"]].astype(str).str.strip(),
            "relevance": pd.to_numeric(
                search_logs[mapping["relevance"]], errors="coerce"
            ),
        }
    )
    checks = {
        "empty_query": logs["query"] == "",
        "unreadable_relevance": logs["relevance"].isna(),
        "unknown_product": ~logs["product_id"].isin(products["product_id"]),
    }
    dropped: dict[str, int] = {}
    keep = pd.Series(True, index=logs.index)
    for cause, failed in checks.items():
        dropped[cause] = int((keep & failed).sum())
        keep &= ~failed
    if dropped["unknown_product"]:
        logger.warning(
            "Dropped %d search-log rows whose product is not in the catalog (e.g. %s)",
            dropped["unknown_product"],
            logs.loc[checks["unknown_product"], "product_id"].head(3).tolist(),
        )
    pairs = (
        logs[keep]
        .groupby(["query", "product_id"], as_index=False, sort=True)["relevance"]
        .agg(aggregate)
    )
    pairs.insert(0, "query_id", pairs["query"].map(_log_query_id))
    positive = pairs["relevance"] >= positive_min
    negative = (
        pairs["relevance"] <= float(negative_max)
        if negative_max is not None
        else pd.Series(False, index=pairs.index)
    )
    positives = pairs.loc[positive, QUERY_PAIR_COLUMNS].reset_index(drop=True)
    # A negative teaches only beside a positive of the same query.
    negatives = pairs.loc[
        negative & pairs["query_id"].isin(positives["query_id"]), QUERY_PAIR_COLUMNS
    ].reset_index(drop=True)
    report = {
        "input_rows": len(search_logs),
        "dropped": dropped,
        "distinct_pairs": len(pairs),
        "positive_pairs": len(positives),
        "positive_queries": int(positives["query_id"].nunique()),
        "hard_negatives": len(negatives),
        "between_thresholds": int((~positive & ~negative).sum()),
    }
    logger.info(
        "Search log: %d positive pairs of %d queries, %d hard negatives (dropped: "
        "%s)",
        len(positives), report["positive_queries"], len(negatives), dropped,
    )  # fmt: skip
    return positives, negatives, report
