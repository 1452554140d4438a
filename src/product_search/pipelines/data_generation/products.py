"""Node that cleans the user's catalog into ``products``: mapped columns,
repaired text, parsed prices and the text that gets embedded."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import ftfy
import numpy as np
import pandas as pd

from product_search.errors import UserError
from product_search.providers import PRODUCT_COLUMNS

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("product_id", "title")
HTML_TAG = re.compile(r"<[^>]{1,200}>")


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
        raise UserError(
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
        raise UserError(
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
        raise UserError(
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
