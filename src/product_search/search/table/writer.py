"""The write path of a search table: check the rows, COPY them with their BM25
weights and vocabulary into staging tables, index those, and swap them in.

It all happens in one transaction, so a search sees the old set or the new
set, never a mix, and a failed save leaves the old set serving.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pgvector import HalfVector, SparseVector
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Engine

from product_search.errors import UserError
from product_search.search.index import (
    ID_COLUMN,
    MODEL_COLUMN,
    VECTOR_COLUMN,
    ProductIndex,
)
from product_search.search.table import impacts, schema
from product_search.search.table import sql as q
from product_search.search.table.errors import DB_ERRORS, db_error
from product_search.search.table.schema import Staging
from product_search.search.table.types import (
    BM25_COLUMN,
    COLUMN,
    RESERVED_COLUMNS,
    TERMS_COLUMN,
    TableSpec,
    check_identifier,
)

logger = logging.getLogger(__name__)

# The binary COPY type of each SQL type of a display column.
_COPY_TYPES = {"boolean": "bool", "bigint": "int8", "double precision": "float8"}


def save(engine: Engine, spec: TableSpec, index: ProductIndex) -> str:
    """Replace the table, its vocabulary and its search function atomically;
    returns the new version."""
    matrix = validate(spec, index)
    staging = Staging(spec, secrets.token_hex(4))
    version = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H.%M.%S.%fZ")
    wanted = spec.save_args["filter_indexes"] or []
    filter_columns = [c for c in index.products.columns if c in wanted]
    try:
        with engine.begin() as conn:
            schema.prepare(conn, spec)
            schema.create_staging_tables(
                conn, staging, schema.column_types(index.products)
            )
            started = time.perf_counter()
            load_rows(conn, staging, index, matrix)
            impacts.load(conn, staging, index)
            timings = {"load_seconds": time.perf_counter() - started}
            started = time.perf_counter()
            schema.create_indexes(conn, staging, filter_columns)
            impacts.create_index(conn, staging)
            timings["index_seconds"] = time.perf_counter() - started
            swap(conn, staging, filter_columns)
            impacts.swap(conn, staging)
            record_version(conn, spec, index, version, timings)
            schema.install_function(conn, spec, index, version)
    except DB_ERRORS as exc:
        raise db_error(
            exc,
            f"Could not save {len(index.products)} rows to {spec.qualified_name} "
            "(the previous table, if any, is unchanged)",
        ) from exc
    logger.info(
        "Saved %d products to %s as version %s (%d terms): copied in %.1f s, "
        "indexes built in %.1f s.",
        len(index.products), spec.qualified_name, version, index.lexical.size,
        timings["load_seconds"], timings["index_seconds"],
    )  # fmt: skip
    return version


def validate(spec: TableSpec, index: ProductIndex) -> np.ndarray:
    """Check the rows and return their embeddings as a float32 matrix."""
    data = index.products
    if not isinstance(data, pd.DataFrame):
        raise ValueError(f"Expected a pandas DataFrame, got {type(data).__name__}.")
    missing = [c for c in (ID_COLUMN, VECTOR_COLUMN) if c not in data.columns]
    if missing:
        raise UserError(
            f"The frame lacks the column(s) {missing}; it has {list(data.columns)}."
        )
    for column in data.columns:
        check_identifier("column name", column, COLUMN)
        if column in RESERVED_COLUMNS:
            raise UserError(
                f"The column name {column!r} is reserved: a search hit shows "
                f"{list(RESERVED_COLUMNS)} itself."
            )
    if data.empty:
        raise UserError(
            f"Refusing to replace {spec.qualified_name} with an empty table."
        )
    ids = data[ID_COLUMN]
    if ids.isna().any():
        raise UserError(f"{int(ids.isna().sum())} row(s) have no {ID_COLUMN}.")
    duplicated = ids[ids.duplicated()].astype(str).unique().tolist()
    if duplicated:
        raise UserError(
            f"{len(duplicated)} {ID_COLUMN}(s) occur more than once, "
            f"e.g. {duplicated[:5]}."
        )
    if MODEL_COLUMN in data.columns and data[MODEL_COLUMN].nunique(dropna=False) > 1:
        raise UserError(
            f"The rows come from several models "
            f"{sorted(map(str, data[MODEL_COLUMN].unique()))}; their vectors "
            "cannot be searched together."
        )
    lengths = data[VECTOR_COLUMN].map(
        lambda v: len(v) if isinstance(v, Sequence | np.ndarray) else -1
    )
    wrong = lengths != spec.dimension
    if wrong.any():
        first = data.loc[wrong].iloc[0]
        raise UserError(
            f"{int(wrong.sum())} embedding(s) are not vectors of length "
            f"{spec.dimension}, e.g. {ID_COLUMN} {first[ID_COLUMN]!r} has "
            f"length {lengths[wrong].iloc[0]} (-1: not a vector)."
        )
    try:
        matrix = np.asarray(data[VECTOR_COLUMN].tolist(), dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise UserError(f"The embeddings are not numeric: {exc}") from exc
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise UserError(
            f"{int((~finite).sum())} embedding(s) hold NaN or infinite values, "
            f"e.g. {ID_COLUMN} {data[ID_COLUMN].iloc[int(np.argmin(finite))]!r}."
        )
    return matrix


def column_values(series: pd.Series, sql_type: str) -> list[Any]:
    """Python values for COPY: missing values (NaN, None, NA) become NULL."""
    if sql_type == "text":
        series = series.map(lambda value: value if pd.isna(value) else str(value))
    return series.astype(object).where(series.notna(), None).tolist()


def load_rows(
    conn: Connection, staging: Staging, index: ProductIndex, matrix: np.ndarray
) -> None:
    """COPY the products, their terms and BM25 weights (as computed by
    :func:`product_search.search.bm25.build_index`) and the vocabulary into
    the staging tables."""
    spec, data = staging.spec, index.products
    types = schema.column_types(data)
    columns = list(types)
    values = [column_values(data[c], types[c]) for c in columns]
    vectors: Iterable[Any] = matrix
    if spec.vector_type == "halfvec":
        vectors = map(HalfVector, matrix)
    q.copy_rows(
        conn,
        q.name(spec, staging.products),
        [*columns, VECTOR_COLUMN],
        [*(_COPY_TYPES.get(types[c], "text") for c in columns), spec.vector_type],
        zip(*values, vectors, strict=True),
    )
    # A sparse vector has at least one dimension, even over no terms.
    size = max(index.lexical.size, 1)
    q.copy_rows(
        conn,
        q.name(spec, staging.lexical),
        [ID_COLUMN, TERMS_COLUMN, BM25_COLUMN],
        ["text", "text[]", "sparsevec"],
        (
            (product_id, sorted(set(terms)), SparseVector(weights, size))
            for product_id, terms, weights in zip(
                values[columns.index(ID_COLUMN)],
                index.terms,
                index.lexical.weights,
                strict=True,
            )
        ),
    )
    frequencies = index.lexical.document_frequency
    q.copy_rows(
        conn,
        q.name(spec, staging.terms),
        ["term", "term_id", "document_frequency"],
        ["text", "int4", "int4"],
        (
            (term, term_id, frequencies[term_id])
            for term, term_id in index.lexical.term_ids.items()
        ),
    )


def swap(conn: Connection, staging: Staging, filter_columns: list[str]) -> None:
    """Replace the live tables by the staging ones (same transaction)."""
    spec = staging.spec
    live = (spec.table_name, spec.lexical_table, spec.terms_table)
    statements = [q.DROP_TABLE.format(table=q.name(spec, table)) for table in live]
    statements += [
        q.RENAME.format(
            kind=sql.SQL(kind), old=q.name(spec, old), new=sql.Identifier(new)
        )
        for kind, old, new in staging.renames(filter_columns)
    ]
    statements += [
        q.RENAME_CONSTRAINT.format(
            table=q.name(spec, table),
            old=sql.Identifier(staging.primary_key(table)),
            new=sql.Identifier(f"{table}_pkey"),
        )
        for table in live
    ]
    for statement in statements:
        q.execute(conn, statement)


def record_version(
    conn: Connection,
    spec: TableSpec,
    index: ProductIndex,
    version: str,
    timings: dict[str, float],
) -> None:
    """A row of the versions table for this save: what it holds and how it is
    searched (read back by :meth:`SearchTable.info`)."""
    schema.create_versions_table(conn, spec)
    data = index.products
    row = {
        "version": version,
        "model": str(data[MODEL_COLUMN].iloc[0]) if MODEL_COLUMN in data else None,
        "dimension": spec.dimension,
        "vector_type": spec.vector_type,
        "row_count": len(data),
        "m": spec.index_args["m"],
        "ef_construction": spec.index_args["ef_construction"],
        **timings,
        "analyzer": index.analyzer,
        "bm25_k1": index.lexical.params.k1,
        "bm25_b": index.lexical.params.b,
        "vocabulary_size": index.lexical.size,
        "average_length": index.lexical.average_length,
        "search_options": _jsonb(index.search_options),
        "reranker": _jsonb(index.reranker),
    }
    q.execute(
        conn,
        q.INSERT.format(
            table=q.name(spec, spec.versions_table),
            columns=q.columns(list(row)),
            values=sql.SQL(", ").join(map(sql.Placeholder, row)),
        ),
        row,
    )


def _jsonb(value: dict[str, Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(value)
