"""Nodes that write shopper queries for the products with the chosen provider
and drop the unusable ones."""

from __future__ import annotations

import logging
import re
from typing import Any

import pandas as pd

from product_search.datasets import AnswerCache
from product_search.errors import UserError
from product_search.providers import FAILURE_COLUMNS, QUERY_COLUMNS
from product_search.providers.offline import generate_offline
from product_search.text import normalise_query

logger = logging.getLogger(__name__)

NON_ALNUM = re.compile(r"[^0-9a-z]+")


def _choose_provider(
    name: str, anthropic_credentials: dict[str, str], products: int, batch_above: int
) -> str:
    if name == "auto":
        if anthropic_credentials.get("api_key") or anthropic_credentials.get(
            "auth_token"
        ):
            return "claude_batch" if products > batch_above else "claude"
        logger.warning(
            "ANTHROPIC_API_KEY is not set (no api_key in the `anthropic` "
            "credentials): writing queries with the offline generator. Set the "
            "key (or provider: claude) to use Claude."
        )
        return "offline"
    if name not in ("claude", "claude_batch", "offline"):
        raise UserError(
            f"Unknown query provider '{name}': use claude, claude_batch, offline "
            "or auto."
        )
    return name


def generate_queries(
    products: pd.DataFrame,
    query_cache: AnswerCache,
    params: dict[str, Any],
    anthropic_credentials: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``queries_per_product`` shopper queries for every product with the
    chosen provider; products whose generation failed are returned apart.

    ``auto`` picks Claude when ``anthropic_credentials`` (the catalog's
    ``anthropic`` credentials, which read ANTHROPIC_API_KEY) hold a key: in
    message batches (``claude_batch``) for more than
    ``claude_batch.batch_above`` products, else one call per product."""
    anthropic_credentials = anthropic_credentials or {}
    per_product = int(params["queries_per_product"])
    query_types = list(params["query_types"])
    if per_product < 1 or not query_types:
        raise UserError(
            "queries_per_product must be at least 1 and query_types non-empty."
        )
    batch = dict(params.get("claude_batch") or {})
    provider = _choose_provider(
        params["provider"],
        anthropic_credentials,
        len(products),
        int(batch.pop("batch_above", 10_000)),
    )
    if provider == "offline":
        queries = generate_offline(
            products, queries_per_product=per_product, query_types=query_types,
            seed=int(params["seed"]),
        )  # fmt: skip
        failures = pd.DataFrame(columns=FAILURE_COLUMNS)
    else:
        queries, failures = _generate_with_claude(
            provider,
            products,
            query_cache,
            params,
            anthropic_credentials=anthropic_credentials,
            batch=batch,
        )
    queries = queries.copy()
    queries["query_id"] = (
        queries["product_id"]
        + "-q"
        + queries.groupby("product_id").cumcount().astype(str)
    )
    logger.info(
        "Generated %d queries for %d products with %s (%d failed)",
        len(queries), products["product_id"].nunique(), provider, len(failures),
    )  # fmt: skip
    return queries[QUERY_COLUMNS], failures


def _generate_with_claude(
    provider: str,
    products: pd.DataFrame,
    query_cache: AnswerCache,
    params: dict[str, Any],
    *,
    anthropic_credentials: dict[str, str],
    batch: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The claude provider with ``params["claude"]``, or claude_batch with
    those settings overridden by ``params["claude_batch"]``."""
    # Optional paths: neither imports the SDK when the offline provider runs.
    from product_search.providers.claude import generate_with_claude  # noqa: PLC0415
    from product_search.providers.claude_batch import (  # noqa: PLC0415
        generate_with_claude_batches,
    )

    settings = dict(params["claude"])
    if provider == "claude_batch":
        settings.pop("max_concurrency", None)
        settings.update(batch)
    max_failure_rate = float(settings.pop("max_failure_rate"))
    generate = (
        generate_with_claude_batches
        if provider == "claude_batch"
        else generate_with_claude
    )
    return generate(
        products,
        query_cache,
        queries_per_product=int(params["queries_per_product"]),
        query_types=list(params["query_types"]),
        max_failures=int(max_failure_rate * len(products)),
        credentials=anthropic_credentials,
        **settings,
    )


def filter_queries(
    generated_queries: pd.DataFrame, products: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Normalise queries and drop the unusable ones, counting each cause."""
    rules = params["filter"]
    queries = generated_queries.copy()
    queries["query"] = queries["query"].fillna("").map(normalise_query)
    words = queries["query"].str.split().str.len().fillna(0)
    chars = queries["query"].str.len()
    titles = products.set_index("product_id")["title"]
    title_key = queries["product_id"].map(titles).fillna("").str.lower()
    checks = {
        "unknown_product": ~queries["product_id"].isin(titles.index),
        "empty": chars == 0,
        "too_short": (chars < rules["min_chars"]) | (words < rules["min_words"]),
        "too_long": (chars > rules["max_chars"]) | (words > rules["max_words"]),
        "repeats_title": queries["query"].str.replace(NON_ALNUM, "", regex=True)
        == title_key.str.replace(NON_ALNUM, "", regex=True),
    }
    dropped: dict[str, int] = {}
    keep = pd.Series(True, index=queries.index)
    for cause, failed in checks.items():
        dropped[cause] = int((keep & failed).sum())
        keep &= ~failed
    # The same text for two products is a contradictory label, and a duplicate
    # inside a batch is a false negative for in-batch-negatives training.
    duplicate = keep & queries["query"].where(keep).duplicated()
    dropped["duplicate"] = int(duplicate.sum())
    keep &= ~duplicate
    kept = queries[keep].reset_index(drop=True)
    report = {
        "input_queries": len(queries),
        "kept_queries": len(kept),
        "dropped": dropped,
    }
    logger.info("Kept %d of %d queries (dropped: %s)", len(kept), len(queries), dropped)
    if kept.empty:
        raise UserError(f"Every generated query was filtered out: {dropped}.")
    return kept, report
