"""Nodes that pool the generated and logged queries, keeping judged queries
out, and split the pool into training, validation and test queries."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from product_search.errors import UserError
from product_search.text import match_key

from .search_logs import QUERY_PAIR_COLUMNS

logger = logging.getLogger(__name__)

PAIR_COLUMNS = [*QUERY_PAIR_COLUMNS, "source"]
SOURCES = ("generated", "log")


def _cap_queries(
    queries: pd.DataFrame, cap: int | None, rng: np.random.Generator
) -> pd.DataFrame:
    """All rows of at most ``cap`` distinct queries, drawn with ``rng``."""
    ids = queries["query_id"].drop_duplicates().to_numpy()
    if cap is None or cap >= len(ids):
        return queries
    chosen = set(rng.permutation(ids)[: int(cap)])
    return queries[queries["query_id"].isin(chosen)]


def mix_query_sources(
    queries: pd.DataFrame,
    logged_queries: pd.DataFrame,
    logged_negatives: pd.DataFrame,
    judged_queries: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Generated and logged queries in one pool with their ``source``, each
    source capped at ``query_sources.<source>.max_queries`` distinct queries.
    Every query that is also an evaluation judgment's query (compared by
    :func:`~product_search.text.match_key`) is removed first, so that no model
    trains on the queries it is judged on."""
    judged = (
        set(judged_queries["query"].map(match_key)) if len(judged_queries) else set()
    )
    rng = np.random.default_rng(int(params["seed"]))
    sources = params["query_sources"]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise UserError(
            f"Unknown query source(s) {unknown} in query_sources: use {list(SOURCES)}."
        )
    frames = {
        "generated": queries[QUERY_PAIR_COLUMNS].assign(source="generated"),
        "log": logged_queries[QUERY_PAIR_COLUMNS].assign(source="log"),
    }
    report: dict[str, Any] = {
        "judged_queries": len(judged),
        "removed_as_judged": {},
        "sources": {},
    }
    pool = []
    for source, frame in frames.items():
        leaked = frame["query"].map(match_key).isin(judged)
        report["removed_as_judged"][source] = int(leaked.sum())
        cap = (sources.get(source) or {}).get("max_queries")
        kept = _cap_queries(frame[~leaked], cap, rng)
        report["sources"][source] = {
            "queries": int(kept["query_id"].nunique()),
            "pairs": len(kept),
            "capped_from": int(frame.loc[~leaked, "query_id"].nunique()),
        }
        pool.append(kept)
    mixed = pd.concat(pool, ignore_index=True)
    leaked_negatives = logged_negatives["query"].map(match_key).isin(judged)
    negatives = logged_negatives[
        ~leaked_negatives & logged_negatives["query_id"].isin(mixed["query_id"])
    ]
    report["removed_as_judged"]["negatives"] = int(leaked_negatives.sum())
    report["hard_negatives"] = len(negatives)
    if any(report["removed_as_judged"].values()):
        logger.warning(
            "Removed training queries that are evaluation judgments' queries: %s",
            report["removed_as_judged"],
        )
    if mixed.empty:
        raise UserError(
            f"No training query is left after mixing the sources: {report}."
        )
    return mixed, negatives.reset_index(drop=True), report


def _share(value: Any, name: str) -> float:
    share = float(value or 0)
    if not 0 <= share < 1:
        raise UserError(f"{name} must be from 0 to below 1, got {value}.")
    return share


def _draw(units: pd.Series, share: float, rng: np.random.Generator) -> set[Any]:
    """``share`` of the distinct ``units``, drawn with ``rng``."""
    unique = units.drop_duplicates().to_numpy()
    return set(rng.permutation(unique)[: round(len(unique) * share)])


def split_queries(
    queries: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Training pairs, validation queries and held-out test queries.

    The test queries are ``test_size`` of the generated queries
    (``split_by: query``) or of the products with all their generated queries
    (``split_by: product``). Logged queries never test: real queries are
    measured on the judgments. With ``split_by: product``, logged pairs of a
    held-out product are dropped so that its products stay unseen.

    The validation queries, ``validation.generated`` of the remaining
    generated queries (or products) and ``validation.log`` of the logged
    queries, do not train either: hybrid search's fusion is tuned on them for
    the trained model, so that no test query chooses it.
    """
    split = params["split"]
    test_size, split_by = float(split["test_size"]), split["split_by"]
    if not 0 < test_size < 1:
        raise UserError(f"split.test_size must be between 0 and 1, got {test_size}.")
    if split_by not in ("query", "product"):
        raise UserError(
            f"split.split_by must be 'query' or 'product', got '{split_by}'."
        )
    shares = split.get("validation") or {}
    unknown = sorted(set(shares) - set(SOURCES))
    if unknown:
        raise UserError(
            f"Unknown query source(s) {unknown} in split.validation: use "
            f"{list(SOURCES)}."
        )
    validation_shares = {
        source: _share(shares.get(source), f"split.validation.{source}")
        for source in SOURCES
    }
    generated = queries["source"] == "generated"
    if not generated.any():
        raise UserError(
            "The held-out test queries come from the generated queries, and there "
            "are none: keep some (query_sources.generated.max_queries > 0)."
        )
    rng = np.random.default_rng(int(split["seed"]))
    units = queries["query_id"] if split_by == "query" else queries["product_id"]
    unique_units = units[generated].drop_duplicates().to_numpy()
    n_test = round(len(unique_units) * test_size)
    if not 0 < n_test < len(unique_units):
        raise UserError(
            f"Cannot hold out {test_size:.0%} of {len(unique_units)} {split_by}s "
            "and keep both sides non-empty."
        )
    test_units = set(rng.permutation(unique_units)[:n_test])
    held_out = units.isin(test_units)
    validating = (
        generated
        & ~held_out
        & units.isin(
            _draw(units[generated & ~held_out], validation_shares["generated"], rng)
        )
    ) | (
        ~generated
        & ~held_out
        & queries["query_id"].isin(
            _draw(
                queries.loc[~generated & ~held_out, "query_id"],
                validation_shares["log"],
                rng,
            )
        )
    )
    trains = ~held_out & ~validating
    if not (trains & generated).any():
        raise UserError(
            f"No generated query is left to train on after holding out "
            f"{test_size:.0%} for testing and {validation_shares['generated']:.0%} "
            "for validation."
        )
    train = queries.loc[trains, PAIR_COLUMNS]
    validation = queries.loc[validating, PAIR_COLUMNS]
    test = queries.loc[held_out & generated, PAIR_COLUMNS]
    if (held_out & ~generated).any():
        logger.info(
            "Left %d logged pairs of held-out products out of training",
            int((held_out & ~generated).sum()),
        )
    logger.info(
        "Split by %s: %d training pairs (%s), %d validation queries (%s), "
        "%d test queries",
        split_by,
        len(train),
        ", ".join(f"{k} {v}" for k, v in train["source"].value_counts().items()),
        validation["query_id"].nunique(),
        ", ".join(
            f"{k} {v}"
            for k, v in validation.groupby("source")["query_id"].nunique().items()
        ),
        len(test),
    )
    return (
        train.reset_index(drop=True),
        validation.reset_index(drop=True),
        test.reset_index(drop=True),
    )
