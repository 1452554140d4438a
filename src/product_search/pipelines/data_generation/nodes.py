"""Nodes of the data_generation pipeline: catalog -> clean products -> shopper
queries -> (query, product) training pairs and held-out test queries."""

from __future__ import annotations

import html
import logging
import os
import re
from typing import Any

import ftfy
import numpy as np
import pandas as pd

from product_search.datasets import AnswerCache
from product_search.providers import FAILURE_COLUMNS, PRODUCT_COLUMNS, QUERY_COLUMNS
from product_search.providers.offline import generate_offline

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("product_id", "title")
PAIR_COLUMNS = ["query_id", "query", "product_id"]
HTML_TAG = re.compile(r"<[^>]{1,200}>")
NON_ALNUM = re.compile(r"[^0-9a-z]+")


def _clean_text(value: Any, counts: dict[str, int]) -> str:
    """Repair mojibake, strip HTML and collapse whitespace, counting repairs."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value)
    fixed = ftfy.fix_text(text, unescape_html=False)
    if fixed != text:
        counts["text_repaired"] += 1
    unescaped = html.unescape(fixed)
    stripped = HTML_TAG.sub(" ", unescaped)
    if stripped != unescaped or unescaped != fixed:
        counts["html_stripped"] += 1
    if "\ufffd" in stripped:
        counts["undecodable_text"] += 1
        stripped = stripped.replace("\ufffd", "")
    return " ".join(stripped.split())


def _rename_columns(raw: pd.DataFrame, mapping: dict[str, str | None]) -> pd.DataFrame:
    """Map the user's column names onto ours; fail naming every missing one."""
    mapping = {ours: mapping.get(ours, ours) for ours in PRODUCT_COLUMNS}
    missing = [
        f"'{theirs}'" + (f" (for {ours})" if theirs != ours else "")
        for ours, theirs in mapping.items()
        if theirs is not None and theirs not in raw.columns
    ]
    unmapped_required = [c for c in REQUIRED_COLUMNS if mapping[c] is None]
    if missing or unmapped_required:
        raise ValueError(
            f"The product catalog lacks the column(s) {', '.join(missing)}"
            + (
                f"; {unmapped_required} cannot be left unmapped"
                if unmapped_required
                else ""
            )
            + f". It has: {list(raw.columns)}. Map your column names under "
            "`data_generation.columns` ({our_name: your_name}, or null for an "
            "optional column you do not have)."
        )
    return pd.DataFrame(
        {
            ours: raw[theirs] if theirs is not None else pd.Series("", index=raw.index)
            for ours, theirs in mapping.items()
        }
    )


def _parse_price(values: pd.Series) -> pd.Series:
    """Numbers, or strings such as "$1,299.00"; anything else becomes NaN."""
    as_text = values.astype("string").str.replace(r"[^\d.\-]", "", regex=True)
    return pd.to_numeric(as_text, errors="coerce")


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    return text[:max_chars].rsplit(" ", 1)[0]


def _product_text(row: pd.Series) -> str:
    """The text that gets embedded: title, brand, category, description."""
    parts = [row["title"]]
    if row["brand"]:
        parts.append(f"Brand: {row['brand']}")
    if row["category"]:
        parts.append(f"Category: {row['category']}")
    if row["description"]:
        parts.append(row["description"])
    return ". ".join(parts)


def prepare_products(
    raw_products: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Clean the user's catalog into ``products`` and report every row dropped
    or repaired, by cause."""
    if raw_products.empty:
        raise ValueError(
            "The product catalog has no rows: check `raw_products` in the catalog."
        )
    products = _rename_columns(raw_products, params.get("columns") or {})
    counts = {"text_repaired": 0, "html_stripped": 0, "undecodable_text": 0}
    for column in ("product_id", "title", "brand", "category", "description"):
        products[column] = [_clean_text(v, counts) for v in products[column]]
    products["price"] = _parse_price(products["price"])

    empty_id = products["product_id"] == ""
    empty_title = ~empty_id & (products["title"] == "")
    duplicate_id = ~empty_id & ~empty_title & products["product_id"].duplicated()
    kept = products[~(empty_id | empty_title | duplicate_id)]
    if params.get("max_products"):
        kept = kept.head(int(params["max_products"]))
    if kept.empty:
        raise ValueError(
            f"No product of the {len(products)} in the catalog has both an id and a "
            "title; nothing to generate queries for."
        )
    kept = kept.reset_index(drop=True)
    max_chars = int(params["text_max_chars"])
    full_text = kept.apply(_product_text, axis=1)
    kept["text"] = full_text.map(lambda text: _truncate(text, max_chars))

    report = {
        "input_rows": len(raw_products),
        "kept_products": len(kept),
        "dropped": {
            "empty_id": int(empty_id.sum()),
            "empty_title": int(empty_title.sum()),
            "duplicate_id": int(duplicate_id.sum()),
        },
        "repaired": counts,
        "missing": {
            column: int((kept[column] == "").sum())
            for column in ("brand", "category", "description")
        }
        | {"price": int(kept["price"].isna().sum())},
        "text_truncated": int((full_text.str.len() > max_chars).sum()),
    }
    if counts["undecodable_text"]:
        logger.warning(
            "%d fields of the catalog held bytes that are not UTF-8 and were "
            "dropped; set `load_args.encoding` of `raw_products` to the file's "
            "encoding (e.g. latin-1) to keep them.",
            counts["undecodable_text"],
        )
    logger.info(
        "Kept %d of %d products (dropped: %s)",
        len(kept), len(raw_products), report["dropped"],
    )  # fmt: skip
    return kept, report


def _choose_provider(name: str) -> str:
    if name == "auto":
        if os.environ.get("ANTHROPIC_API_KEY"):
            return "claude"
        logger.warning(
            "ANTHROPIC_API_KEY is not set: writing queries with the offline "
            "generator. Set the key (or provider: claude) to use Claude."
        )
        return "offline"
    if name not in ("claude", "offline"):
        raise ValueError(
            f"Unknown query provider '{name}': use claude, offline or auto."
        )
    return name


def generate_queries(
    products: pd.DataFrame, query_cache: AnswerCache, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``queries_per_product`` shopper queries for every product with the
    chosen provider; products whose generation failed are returned apart."""
    per_product = int(params["queries_per_product"])
    query_types = list(params["query_types"])
    if per_product < 1 or not query_types:
        raise ValueError(
            "queries_per_product must be at least 1 and query_types non-empty."
        )
    provider = _choose_provider(params["provider"])
    if provider == "offline":
        queries = generate_offline(
            products, queries_per_product=per_product, query_types=query_types,
            seed=int(params["seed"]),
        )  # fmt: skip
        failures = pd.DataFrame(columns=FAILURE_COLUMNS)
    else:
        from product_search.providers.claude import (  # noqa: PLC0415 - optional path
            generate_with_claude,
        )

        claude = dict(params["claude"])
        max_failure_rate = float(claude.pop("max_failure_rate"))
        queries, failures = generate_with_claude(
            products,
            query_cache,
            queries_per_product=per_product,
            query_types=query_types,
            max_failures=int(max_failure_rate * len(products)),
            **claude,
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


def normalise_query(query: str) -> str:
    """Lower case, repaired, single-spaced, without wrapping quotes."""
    text = " ".join(ftfy.fix_text(str(query)).lower().split())
    return text.strip(" \"'`.,;:!?")


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
        raise ValueError(f"Every generated query was filtered out: {dropped}.")
    return kept, report


def split_queries(
    queries: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``test_size`` of the queries (``split_by: query``) or of the
    products with all their queries (``split_by: product``)."""
    split = params["split"]
    test_size, split_by = float(split["test_size"]), split["split_by"]
    if not 0 < test_size < 1:
        raise ValueError(f"split.test_size must be between 0 and 1, got {test_size}.")
    if split_by not in ("query", "product"):
        raise ValueError(
            f"split.split_by must be 'query' or 'product', got '{split_by}'."
        )
    rng = np.random.default_rng(int(split["seed"]))
    units = queries["query_id"] if split_by == "query" else queries["product_id"]
    unique_units = units.drop_duplicates().to_numpy()
    n_test = round(len(unique_units) * test_size)
    if not 0 < n_test < len(unique_units):
        raise ValueError(
            f"Cannot hold out {test_size:.0%} of {len(unique_units)} {split_by}s "
            "and keep both sides non-empty."
        )
    test_units = set(rng.permutation(unique_units)[:n_test])
    is_test = units.isin(test_units)
    train, test = (
        queries.loc[~is_test, PAIR_COLUMNS],
        queries.loc[is_test, PAIR_COLUMNS],
    )
    logger.info(
        "Split by %s: %d training pairs, %d test queries",
        split_by,
        len(train),
        len(test),
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def report_data_quality(
    product_report: dict[str, Any],
    query_report: dict[str, Any],
    generation_failures: pd.DataFrame,
) -> dict[str, Any]:
    """One data-quality report for the whole pipeline."""
    return {
        "products": product_report,
        "generation_failures": len(generation_failures),
        "queries": query_report,
    }
