"""Nodes of the data_generation pipeline: catalog -> clean products -> shopper
queries -> (query, product) training pairs and held-out test queries."""

from __future__ import annotations

import hashlib
import html
import logging
import re
from typing import Any

import ftfy
import numpy as np
import pandas as pd

from product_search.datasets import AnswerCache
from product_search.errors import UserError
from product_search.providers import FAILURE_COLUMNS, PRODUCT_COLUMNS, QUERY_COLUMNS
from product_search.providers.offline import generate_offline

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("product_id", "title")
PAIR_COLUMNS = ["query_id", "query", "product_id", "source"]
NEGATIVE_COLUMNS = ["query_id", "query", "product_id"]
LOG_COLUMNS = ("query", "product_id", "relevance")
SOURCES = ("generated", "log")
HTML_TAG = re.compile(r"<[^>]{1,200}>")
PUNCTUATION = re.compile(r"[^\w\s]+")
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


def _choose_provider(name: str, anthropic_credentials: dict[str, str]) -> str:
    if name == "auto":
        if anthropic_credentials.get("api_key") or anthropic_credentials.get(
            "auth_token"
        ):
            return "claude"
        logger.warning(
            "ANTHROPIC_API_KEY is not set (no api_key in the `anthropic` "
            "credentials): writing queries with the offline generator. Set the "
            "key (or provider: claude) to use Claude."
        )
        return "offline"
    if name not in ("claude", "offline"):
        raise UserError(
            f"Unknown query provider '{name}': use claude, offline or auto."
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
    ``anthropic`` credentials, which read ANTHROPIC_API_KEY) hold a key."""
    anthropic_credentials = anthropic_credentials or {}
    per_product = int(params["queries_per_product"])
    query_types = list(params["query_types"])
    if per_product < 1 or not query_types:
        raise UserError(
            "queries_per_product must be at least 1 and query_types non-empty."
        )
    provider = _choose_provider(params["provider"], anthropic_credentials)
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
            credentials=anthropic_credentials,
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
        raise UserError(f"Every generated query was filtered out: {dropped}.")
    return kept, report


def match_key(query: str) -> str:
    """The form in which two queries count as the same for the leakage guard:
    lower case, punctuation as spaces, single spaces."""
    return " ".join(PUNCTUATION.sub(" ", str(query).lower()).split())


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
        return _empty(NEGATIVE_COLUMNS), _empty(NEGATIVE_COLUMNS), {"input_rows": 0}
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
    positives = pairs.loc[positive, NEGATIVE_COLUMNS].reset_index(drop=True)
    # A negative teaches only beside a positive of the same query.
    negatives = pairs.loc[
        negative & pairs["query_id"].isin(positives["query_id"]), NEGATIVE_COLUMNS
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
    :func:`match_key`) is removed first, so that no model trains on the
    queries it is judged on."""
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
        "generated": queries[NEGATIVE_COLUMNS].assign(source="generated"),
        "log": logged_queries[NEGATIVE_COLUMNS].assign(source="log"),
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


def report_data_quality(
    product_report: dict[str, Any],
    query_report: dict[str, Any],
    generation_failures: pd.DataFrame,
    search_log_report: dict[str, Any],
    source_report: dict[str, Any],
) -> dict[str, Any]:
    """One data-quality report for the whole pipeline."""
    return {
        "products": product_report,
        "generation_failures": len(generation_failures),
        "queries": query_report,
        "search_logs": search_log_report,
        "query_sources": source_report,
    }
