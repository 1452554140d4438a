"""The search table in PostgreSQL: products, their vectors (pgvector HNSW) and
their BM25 weights (pgvector ``sparsevec``, candidates through a GIN index),
searched by dense, lexical or hybrid retrieval in one SQL statement.

This is the one home of the database code: the deployment writes through
:meth:`SearchTable.save`, the service and the evaluation read through
:meth:`SearchTable.search`, and the Kedro dataset only wraps them.

Layout of a table ``t`` (every name derived from ``t``)::

    t            product_id, display columns, model, embedding vector(d)
                 indexes: t_pkey, t_hnsw (vector_cosine_ops)
    t_lexical    product_id, terms text[] (the analysed terms), bm25 sparsevec
                 indexes: t_lexical_pkey, t_lexical_terms_gin
    t_terms      term, term_id, document_frequency: the vocabulary
    t_versions   one row per save: model, dimension, rows, HNSW settings,
                 analyser, BM25 k1 and b, vocabulary size, average length,
                 the fusion tuned for the model (search_options), the
                 reranker shipped with it (reranker)

The lexical columns have a table of their own because BM25 scores thousands
of candidates a query: over narrow rows that is a few pages, beside 1.5 kB
vectors it would be most of the table (and of PostgreSQL's buffer cache).

A save builds ``t``, ``t_lexical`` and ``t_terms`` as staging tables and swaps
them in within one transaction, so a search sees the old set or the new set,
never a mix, and a failed save leaves the old set serving.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal

import numpy as np
import pandas as pd
import psycopg
from pgvector import SparseVector
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from product_search.errors import UserError
from product_search.search.analyzer import analyze
from product_search.search.index import (
    ID_COLUMN,
    MODEL_COLUMN,
    VECTOR_COLUMN,
    ProductIndex,
)

logger = logging.getLogger(__name__)

TERMS_COLUMN = "terms"
BM25_COLUMN = "bm25"
#: Columns a search hit never shows.
HIDDEN_COLUMNS = (VECTOR_COLUMN, MODEL_COLUMN)
#: Names of the table's lexical columns and of a hit's own fields.
RESERVED_COLUMNS = (
    TERMS_COLUMN, BM25_COLUMN, "score", "dense_rank", "dense_score",
    "lexical_rank", "lexical_score",
)  # fmt: skip

# Lower case so that quoted and unquoted SQL agree; short enough to leave room
# for the suffixes of the staging tables, their indexes and the versions table.
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")
COLUMN = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# pgvector's HNSW index takes vectors of at most 2,000 dimensions.
MAX_INDEXED_DIMENSION = 2000
HNSW_LIMITS = {"m": (2, 100), "ef_construction": (4, 1000)}
MAX_EF_SEARCH = 1000
DEFAULT_INDEX_ARGS: dict[str, int] = {"m": 16, "ef_construction": 64}
# HNSW builds are much slower once the graph outgrows maintenance_work_mem.
DEFAULT_SAVE_ARGS: dict[str, Any] = {
    "maintenance_work_mem": "512MB",
    "max_parallel_maintenance_workers": None,
    # Columns with a B-tree for the filters of /search, where the table has them.
    "filter_indexes": ["category", "brand", "price"],
}
# How the search function compares a filter's values with a column of each type.
_COMPARED_AS = {
    "text": "text",
    "bigint": "numeric",
    "double precision": "double precision",
    "boolean": "boolean",
}
_SEARCH_FUNCTION = (
    resources.files("product_search.search") / "search_function.sql"
).read_text(encoding="utf-8")
_DB_ERRORS = (SQLAlchemyError, psycopg.Error)

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "dense", "lexical")


class SearchError(Exception):
    """A search table could not be written or read; the message says why."""


class DatabaseUnavailableError(SearchError):
    """The database could not be reached (as opposed to a bad table or query)."""


class TableMissingError(SearchError):
    """The table has not been deployed yet."""


class FilterError(UserError):
    """A search's filters name a column the table lacks, or a condition it
    cannot apply; the message says which and what the table has."""


# How the search function refuses its arguments: invalid_parameter_value, and a
# filter value that is no value of the column's type.
_REFUSED_ARGUMENTS = (
    psycopg.errors.InvalidParameterValue,
    psycopg.errors.InvalidTextRepresentation,
)


class SearchOptions(BaseModel):
    """How hybrid search fuses its two lanes, and how deep each lane looks.

    ``rrf``: each lane adds ``weight / (rrf_k + rank)`` for a product it
    found. ``weighted``: each lane's scores are scaled to 0..1 over its
    candidates (min-max) and added, times the lane's weight. The defaults were
    chosen on the Home Depot search log, not on any test query
    (bench/results/hybrid_search.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = Field(5, ge=1, le=10_000)
    dense_weight: float = Field(0.5, ge=0)
    lexical_weight: float = Field(1.0, ge=0)
    dense_depth: int = Field(100, ge=1, le=1000, description="Dense candidates.")
    lexical_depth: int = Field(100, ge=1, le=1000, description="BM25 candidates.")
    # HNSW candidate list size, raised to dense_depth when that is larger.
    ef_search: int = Field(100, ge=1, le=MAX_EF_SEARCH)
    # A filtered dense lane ranks the matching products exactly when the filter
    # keeps at most this many; above it, it walks the HNSW graph with
    # pgvector's iterative scan. An exact scan's cost grows with the products
    # it scores, the walk's does not: on 2 cores they cost the same near 2,000
    # products, where the walk's recall@10 is 0.94 to 0.98
    # (bench/results/filtered_search.md).
    filter_exact_rows: int = Field(2000, ge=0)


@dataclass(frozen=True)
class Hit:
    """A product found by a search, with the evidence of each lane: its rank
    (1 = best) and score there, None where that lane did not return it, and
    the reranker's score where one reranked it."""

    product_id: str
    score: float
    fields: dict[str, Any]
    dense_rank: int | None
    dense_score: float | None
    lexical_rank: int | None
    lexical_score: float | None
    # The cross-encoder's score, when a reranker reordered the hit.
    rerank_score: float | None = None


def check_identifier(kind: str, value: Any, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UserError(
            f"Invalid {kind} {value!r}: use lower-case letters, digits and "
            f"underscores, starting with a letter or underscore "
            f"(pattern {pattern.pattern})."
        )
    return value


def _check_keys(kind: str, given: dict[str, Any], allowed: dict[str, Any]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise UserError(
            f"Unknown {kind} {unknown}; expected some of {sorted(allowed)}."
        )


def _db_error(exc: BaseException, message: str) -> SearchError:
    """A SearchError with the driver's own message, without SQLAlchemy's echo
    of statement and parameters (which may hold a batch of vectors)."""
    original = getattr(exc, "orig", None) or exc
    # The server's one-line message when there is one (not the LINE/caret echo).
    diagnostic = getattr(original, "diag", None)
    detail = getattr(diagnostic, "message_primary", None) or str(original).strip()
    # Connection failures carry no SQLSTATE, or one of class 08 / 57P (server
    # shutting down or starting); disk full, lock timeouts etc. are not them.
    state = getattr(original, "sqlstate", None)
    if isinstance(original, psycopg.OperationalError) and (
        state is None or state.startswith(("08", "57P"))
    ):
        return DatabaseUnavailableError(
            f"{message}: the database is unreachable: {detail}"
        )
    if isinstance(original, psycopg.errors.UndefinedTable):
        return TableMissingError(
            f"{message}: {detail}; run the deployment pipeline to create it."
        )
    if isinstance(original, psycopg.errors.UndefinedFunction):
        # The function comes with the table: neither has been deployed yet.
        return TableMissingError(
            f"{message}: its search function does not exist; run the deployment "
            "pipeline to create it."
        )
    return SearchError(f"{message}: {detail}")


def _column_types(data: pd.DataFrame) -> dict[str, str]:
    """The SQL type of each display column, from its pandas dtype."""
    types = {}
    for column in data.columns.drop(VECTOR_COLUMN):
        series = data[column]
        if pd.api.types.is_bool_dtype(series):
            types[column] = "boolean"
        elif pd.api.types.is_integer_dtype(series):
            types[column] = "bigint"
        elif pd.api.types.is_float_dtype(series):
            types[column] = "double precision"
        else:
            types[column] = "text"
    types[ID_COLUMN] = "text"
    return types


def _column_values(series: pd.Series, sql_type: str) -> list[Any]:
    """Python values for COPY: missing values (NaN, None, NA) become NULL."""
    if sql_type == "text":
        series = series.map(lambda value: value if pd.isna(value) else str(value))
    return series.astype(object).where(series.notna(), None).tolist()


def _execute(
    conn: Connection, query: sql.Composable, params: Any = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run a psycopg-composed statement on a SQLAlchemy connection and return
    the column names and rows (empty for statements)."""
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(query, params)
        if cursor.description is None:
            return [], []
        return [d.name for d in cursor.description], cursor.fetchall()


def _copy_rows(
    conn: Connection,
    table: sql.Composable,
    columns: list[str],
    types: list[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """COPY ``rows`` into ``table`` in binary form (the fastest way in)."""
    driver = conn.connection.driver_connection
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


@dataclass(frozen=True)
class TableSpec:
    """Where a search table lives and how it is indexed, checked on creation
    (``ValueError`` with what to fix)."""

    table_name: str
    dimension: int
    schema: str | None = None
    index_args: dict[str, Any] = field(default_factory=dict)
    save_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_identifier("table name", self.table_name, IDENTIFIER)
        if self.schema is not None:
            check_identifier("schema", self.schema, IDENTIFIER)
        dimension = self.dimension
        if (
            isinstance(dimension, bool)
            or not isinstance(dimension, int)
            or not 1 <= dimension <= MAX_INDEXED_DIMENSION
        ):
            raise UserError(
                f"'dimension' must be an integer from 1 to {MAX_INDEXED_DIMENSION} "
                f"(the most an HNSW index takes), got {dimension!r}."
            )
        _check_keys("index_args", self.index_args, DEFAULT_INDEX_ARGS)
        index_args = {**DEFAULT_INDEX_ARGS, **self.index_args}
        for key, (low, high) in HNSW_LIMITS.items():
            value = index_args[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"index_args.{key} must be an integer, got {value!r}.")
            if not low <= value <= high:
                raise UserError(
                    f"index_args.{key} must be from {low} to {high}, got {value}."
                )
        if index_args["ef_construction"] < 2 * index_args["m"]:
            raise UserError(
                "index_args.ef_construction must be at least twice index_args.m "
                f"(pgvector's rule), got {index_args}."
            )
        _check_keys("save_args", self.save_args, DEFAULT_SAVE_ARGS)
        object.__setattr__(self, "index_args", index_args)
        object.__setattr__(self, "save_args", {**DEFAULT_SAVE_ARGS, **self.save_args})


class SearchTable:
    """A search table on a SQLAlchemy engine whose connections have pgvector's
    types registered (:func:`product_search.database.get_engine` does that)."""

    def __init__(self, engine: Engine, spec: TableSpec) -> None:
        self.engine = engine
        self.spec = spec
        self.table_name = spec.table_name
        self.schema = spec.schema
        self.dimension = spec.dimension
        self.index_args = spec.index_args
        self.save_args = spec.save_args

    # ------------------------------------------------------------ names
    def _name(self, name: str) -> sql.Composable:
        if self.schema is None:
            return sql.Identifier(name)
        return sql.Identifier(self.schema, name)

    def _qualified(self, name: str) -> str:
        """``schema.name`` (or ``name``), for messages and ``to_regclass``
        (unquoted, which is safe: names are checked lower-case identifiers)."""
        return f"{self.schema}.{name}" if self.schema else name

    @property
    def qualified_name(self) -> str:
        return self._qualified(self.table_name)

    @property
    def lexical_table(self) -> str:
        return f"{self.table_name}_lexical"

    @property
    def terms_table(self) -> str:
        return f"{self.table_name}_terms"

    @property
    def versions_table(self) -> str:
        return f"{self.table_name}_versions"

    @property
    def function_name(self) -> str:
        """The SQL function that searches the table (``search_function.sql``)."""
        return f"{self.table_name}_search"

    @property
    def qualified_function(self) -> str:
        return self._qualified(self.function_name)

    def _check_dimension(self, conn: Connection) -> bool:
        """Whether the table exists; refuses one of another dimension or one
        without a vector column."""
        _, rows = _execute(
            conn,
            sql.SQL(
                "SELECT to_regclass(%(t)s) IS NOT NULL, ("
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%(t)s) "
                "AND attname = %(c)s AND NOT attisdropped), "
                "to_regclass(%(l)s) IS NOT NULL"
            ),
            {
                "t": self.qualified_name,
                "c": VECTOR_COLUMN,
                "l": self._qualified(self.lexical_table),
            },
        )
        exists, dimension, lexical = rows[0]
        if exists and dimension is None:
            raise SearchError(
                f"Table {self.qualified_name} has no '{VECTOR_COLUMN}' column; it "
                "was not written by product-search."
            )
        if exists and dimension != self.dimension:
            raise SearchError(
                f"Table {self.qualified_name} holds vectors of dimension {dimension}, "
                f"but it is configured for {self.dimension}. Use another table_name "
                "for a model of another dimension (or drop the table)."
            )
        if exists and not lexical:
            raise TableMissingError(
                f"Table {self.qualified_name} was deployed before hybrid search and "
                "has no BM25 weights; rerun the deployment pipeline."
            )
        return bool(exists)

    def exists(self) -> bool:
        try:
            with self.engine.connect() as conn:
                return self._check_dimension(conn)
        except TableMissingError:
            return True
        except _DB_ERRORS as exc:
            raise _db_error(exc, f"Could not look for {self.qualified_name}") from exc

    # ------------------------------------------------------------ save
    def _validate(self, index: ProductIndex) -> np.ndarray:
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
                f"Refusing to replace {self.qualified_name} with an empty table."
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
        if (
            MODEL_COLUMN in data.columns
            and data[MODEL_COLUMN].nunique(dropna=False) > 1
        ):
            raise UserError(
                f"The rows come from several models "
                f"{sorted(map(str, data[MODEL_COLUMN].unique()))}; their vectors "
                "cannot be searched together."
            )
        lengths = data[VECTOR_COLUMN].map(
            lambda v: len(v) if isinstance(v, Sequence | np.ndarray) else -1
        )
        wrong = lengths != self.dimension
        if wrong.any():
            first = data.loc[wrong].iloc[0]
            raise UserError(
                f"{int(wrong.sum())} embedding(s) are not vectors of length "
                f"{self.dimension}, e.g. {ID_COLUMN} {first[ID_COLUMN]!r} has "
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

    def save(self, index: ProductIndex) -> str:
        """Replace the table and its vocabulary atomically; returns the version."""
        matrix = self._validate(index)
        token = secrets.token_hex(4)
        version = datetime.now(tz=UTC).strftime("%Y-%m-%dT%H.%M.%S.%fZ")
        try:
            with self.engine.begin() as conn:
                timings = self._build(conn, index, matrix, token)
                self._swap(conn, token, self._filter_indexed(index))
                self._record_version(conn, index, version, timings)
                self._install_function(conn, index, version)
        except _DB_ERRORS as exc:
            raise _db_error(
                exc,
                f"Could not save {len(index.products)} rows to {self.qualified_name} "
                "(the previous table, if any, is unchanged)",
            ) from exc
        logger.info(
            "Saved %d products to %s as version %s (%d terms): copied in %.1f s, "
            "indexes built in %.1f s.",
            len(index.products), self.qualified_name, version, index.lexical.size,
            timings["load_seconds"], timings["index_seconds"],
        )  # fmt: skip
        return version

    def _staging(self, token: str) -> tuple[str, str, str]:
        return (
            f"{self.table_name}__new_{token}",
            f"{self.table_name}__lexical_new_{token}",
            f"{self.table_name}__terms_new_{token}",
        )

    def _build(
        self, conn: Connection, index: ProductIndex, matrix: np.ndarray, token: str
    ) -> dict[str, float]:
        """Create the staging tables, COPY the rows in, build their indexes."""
        _execute(conn, sql.SQL("CREATE EXTENSION IF NOT EXISTS vector"))
        if self.schema:
            _execute(
                conn,
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.schema)
                ),
            )
        self._check_dimension_for_save(conn)
        staging, staging_lexical, staging_terms = self._staging(token)
        data = index.products
        types = _column_types(data)
        columns = list(types)
        definitions = [
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
            for c, t in types.items()
        ]
        definitions += [
            sql.SQL("{} vector({}) NOT NULL").format(
                sql.Identifier(VECTOR_COLUMN), sql.Literal(self.dimension)
            ),
            sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
                sql.Identifier(f"{self.table_name}__pkey_{token}"),
                sql.Identifier(ID_COLUMN),
            ),
        ]
        statements = [
            sql.SQL("CREATE TABLE {} ({})").format(
                self._name(staging), sql.SQL(", ").join(definitions)
            ),
            sql.SQL(
                "CREATE TABLE {} ({} text NOT NULL, {} text[] NOT NULL, "
                "{} sparsevec NOT NULL, CONSTRAINT {} PRIMARY KEY ({}))"
            ).format(
                self._name(staging_lexical),
                sql.Identifier(ID_COLUMN),
                sql.Identifier(TERMS_COLUMN),
                sql.Identifier(BM25_COLUMN),
                sql.Identifier(f"{self.lexical_table}__pkey_{token}"),
                sql.Identifier(ID_COLUMN),
            ),
            sql.SQL(
                "CREATE TABLE {} (term text NOT NULL, term_id integer NOT NULL, "
                "document_frequency integer NOT NULL, CONSTRAINT {} PRIMARY KEY (term))"
            ).format(
                self._name(staging_terms),
                sql.Identifier(f"{self.terms_table}__pkey_{token}"),
            ),
        ]
        for statement in statements:
            _execute(conn, statement)

        started = time.perf_counter()
        values = [_column_values(data[c], types[c]) for c in columns]
        copy_types = [
            {"boolean": "bool", "bigint": "int8", "double precision": "float8"}.get(
                types[c], "text"
            )
            for c in columns
        ]
        _copy_rows(
            conn,
            self._name(staging),
            [*columns, VECTOR_COLUMN],
            [*copy_types, "vector"],
            zip(*values, matrix, strict=True),
        )
        # A sparse vector has at least one dimension, even over no terms.
        size = max(index.lexical.size, 1)
        _copy_rows(
            conn,
            self._name(staging_lexical),
            [ID_COLUMN, TERMS_COLUMN, BM25_COLUMN],
            ["text", "text[]", "sparsevec"],
            (
                (product_id, sorted(set(terms)), SparseVector(weights, size))
                for product_id, terms, weights in zip(
                    values[0], index.terms, index.lexical.weights, strict=True
                )
            ),
        )
        frequencies = index.lexical.document_frequency
        _copy_rows(
            conn,
            self._name(staging_terms),
            ["term", "term_id", "document_frequency"],
            ["text", "int4", "int4"],
            (
                (term, term_id, frequencies[term_id])
                for term, term_id in index.lexical.term_ids.items()
            ),
        )
        load_seconds = time.perf_counter() - started

        started = time.perf_counter()
        for setting in ("maintenance_work_mem", "max_parallel_maintenance_workers"):
            if self.save_args[setting] is not None:
                _execute(
                    conn,
                    sql.SQL("SELECT set_config(%s, %s, true)"),
                    (setting, str(self.save_args[setting])),
                )
        for statement in (
            sql.SQL(
                "CREATE INDEX {} ON {} USING hnsw ({} vector_cosine_ops) "
                "WITH (m = {}, ef_construction = {})"
            ).format(
                sql.Identifier(f"{self.table_name}__hnsw_{token}"),
                self._name(staging),
                sql.Identifier(VECTOR_COLUMN),
                sql.Literal(self.index_args["m"]),
                sql.Literal(self.index_args["ef_construction"]),
            ),
            sql.SQL("CREATE INDEX {} ON {} USING gin ({})").format(
                sql.Identifier(f"{self.table_name}__gin_{token}"),
                self._name(staging_lexical),
                sql.Identifier(TERMS_COLUMN),
            ),
            # B-trees for the filters of /search (category, brand, price).
            *(
                sql.SQL("CREATE INDEX {} ON {} ({})").format(
                    sql.Identifier(f"{self.table_name}__filter{i}_{token}"),
                    self._name(staging),
                    sql.Identifier(column),
                )
                for i, column in enumerate(self._filter_indexed(index))
            ),
            # Statistics for the planner: how many products a term matches.
            *(
                sql.SQL("ANALYZE {}").format(self._name(name))
                for name in self._staging(token)
            ),
        ):
            _execute(conn, statement)
        return {
            "load_seconds": load_seconds,
            "index_seconds": time.perf_counter() - started,
        }

    def _check_dimension_for_save(self, conn: Connection) -> None:
        try:
            self._check_dimension(conn)
        except TableMissingError:
            pass  # a table from before hybrid search: replaced by this save

    def _filter_indexed(self, index: ProductIndex) -> list[str]:
        """The columns of ``save_args.filter_indexes`` that the products have."""
        wanted = self.save_args["filter_indexes"] or []
        return [c for c in index.products.columns if c in wanted]

    def _swap(self, conn: Connection, token: str, filter_indexed: list[str]) -> None:
        """Replace the live tables by the staging ones (same transaction)."""
        table, lexical, terms = self.table_name, self.lexical_table, self.terms_table
        staging, staging_lexical, staging_terms = self._staging(token)
        renames = [
            ("TABLE", staging, table),
            ("INDEX", f"{table}__hnsw_{token}", f"{table}_hnsw"),
            ("TABLE", staging_lexical, lexical),
            ("INDEX", f"{table}__gin_{token}", f"{lexical}_terms_gin"),
            ("TABLE", staging_terms, terms),
            *(
                ("INDEX", f"{table}__filter{i}_{token}", f"{table}_{column}"[:63])
                for i, column in enumerate(filter_indexed)
            ),
        ]
        statements = [
            sql.SQL("DROP TABLE IF EXISTS {}").format(self._name(name))
            for name in (table, lexical, terms)
        ]
        statements += [
            sql.SQL("ALTER {} {} RENAME TO {}").format(
                sql.SQL(kind), self._name(old), sql.Identifier(new)
            )
            for kind, old, new in renames
        ]
        statements += [
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                self._name(name),
                sql.Identifier(f"{name}__pkey_{token}"),
                sql.Identifier(f"{name}_pkey"),
            )
            for name in (table, lexical, terms)
        ]
        for statement in statements:
            _execute(conn, statement)

    def _record_version(
        self,
        conn: Connection,
        index: ProductIndex,
        version: str,
        timings: dict[str, float],
    ) -> None:
        versions = self._name(self.versions_table)
        _execute(
            conn,
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "version text PRIMARY KEY, model text, dimension integer NOT NULL, "
                "row_count bigint NOT NULL, m integer NOT NULL, "
                "ef_construction integer NOT NULL, load_seconds double precision, "
                "index_seconds double precision, "
                "created_at timestamptz NOT NULL DEFAULT now())"
            ).format(versions),
        )
        # Tables from before hybrid search gain the lexical columns.
        _execute(
            conn,
            sql.SQL(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS analyzer text, "
                "ADD COLUMN IF NOT EXISTS bm25_k1 double precision, "
                "ADD COLUMN IF NOT EXISTS bm25_b double precision, "
                "ADD COLUMN IF NOT EXISTS vocabulary_size integer, "
                "ADD COLUMN IF NOT EXISTS average_length double precision, "
                "ADD COLUMN IF NOT EXISTS search_options jsonb, "
                "ADD COLUMN IF NOT EXISTS reranker jsonb"
            ).format(versions),
        )
        data = index.products
        model = (
            str(data[MODEL_COLUMN].iloc[0]) if MODEL_COLUMN in data.columns else None
        )
        _execute(
            conn,
            sql.SQL(
                "INSERT INTO {} (version, model, dimension, row_count, m, "
                "ef_construction, load_seconds, index_seconds, analyzer, bm25_k1, "
                "bm25_b, vocabulary_size, average_length, search_options, reranker) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(versions),
            (
                version,
                model,
                self.dimension,
                len(data),
                self.index_args["m"],
                self.index_args["ef_construction"],
                timings["load_seconds"],
                timings["index_seconds"],
                index.analyzer,
                index.lexical.params.k1,
                index.lexical.params.b,
                index.lexical.size,
                index.lexical.average_length,
                None if index.search_options is None else Jsonb(index.search_options),
                None if index.reranker is None else Jsonb(index.reranker),
            ),
        )

    def _install_function(
        self, conn: Connection, index: ProductIndex, version: str
    ) -> None:
        """(Re)create the table's search function for the version just swapped
        in: its names, vocabulary size, filterable columns and, as the default
        fusion, the one recorded with the version."""
        driver = conn.connection.driver_connection
        types = _column_types(
            index.products.drop(columns=MODEL_COLUMN, errors="ignore")
        )
        function = self._name(self.function_name)
        names = {
            "function": function,
            **{
                key: sql.Literal(self._name(name).as_string(driver))
                for key, name in (
                    ("products", self.table_name),
                    ("lexical", self.lexical_table),
                    ("vocabulary", self.terms_table),
                )
            },
            "vocabulary_size": sql.Literal(index.lexical.size),
            "dimension": sql.Literal(self.dimension),
            "max_ef_search": sql.Literal(MAX_EF_SEARCH),
            "hidden": sql.Literal(list(HIDDEN_COLUMNS)),
            "filter_columns": sql.Literal(
                json.dumps({c: _COMPARED_AS[t] for c, t in sorted(types.items())})
            ),
            "options": sql.Literal(
                SearchOptions(**(index.search_options or {})).model_dump_json()
            ),
        }
        model = (
            index.products[MODEL_COLUMN].iloc[0]
            if MODEL_COLUMN in index.products
            else None
        )
        for statement in (
            sql.SQL(
                "DROP FUNCTION IF EXISTS {}(vector, text[], integer, jsonb, text, jsonb)"
            ).format(function),
            sql.SQL(_SEARCH_FUNCTION).format(**names),
            sql.SQL("COMMENT ON FUNCTION {} IS {}").format(
                function,
                sql.Literal(
                    f"product-search: searches {self.qualified_name} version "
                    f"{version} (model {model}); see search_function.sql."
                ),
            ),
        ):
            _execute(conn, statement)

    # ------------------------------------------------------------ read
    def info(self) -> dict[str, Any] | None:
        """The current version (model, dimension, row count, analyser, BM25
        parameters, search_options, created_at, ...), or None if it has never
        been saved."""
        try:
            with self.engine.connect() as conn:
                if not self._check_dimension(conn):
                    return None
                names, rows = _execute(
                    conn,
                    sql.SQL(
                        "SELECT * FROM {} ORDER BY created_at DESC, version DESC LIMIT 1"
                    ).format(self._name(self.versions_table)),
                )
        except _DB_ERRORS as exc:
            raise _db_error(
                exc, f"Could not read the version of {self.qualified_name}"
            ) from exc
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows (all columns, the lexical ones included, or ``columns``)
        ordered by product id; the embeddings as numpy arrays, the BM25 weights
        as ``{term id: weight}``."""
        for column in columns or []:
            check_identifier("column name", column, COLUMN)
        try:
            with self.engine.connect() as conn:
                if not self._check_dimension(conn):
                    raise TableMissingError(
                        f"Table {self.qualified_name} does not exist yet; run the "
                        "deployment pipeline first."
                    )
                selected = (
                    sql.SQL("*")
                    if columns is None
                    else sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                names, rows = _execute(
                    conn,
                    sql.SQL("SELECT {} FROM {} JOIN {} USING ({}) ORDER BY {}").format(
                        selected,
                        self._name(self.table_name),
                        self._name(self.lexical_table),
                        sql.Identifier(ID_COLUMN),
                        sql.Identifier(ID_COLUMN),
                    ),
                )
        except _DB_ERRORS as exc:
            raise _db_error(exc, f"Could not load {self.qualified_name}") from exc
        frame = pd.DataFrame(rows, columns=names)
        if VECTOR_COLUMN in frame.columns:
            frame[VECTOR_COLUMN] = [v.to_numpy() for v in frame[VECTOR_COLUMN]]
        if BM25_COLUMN in frame.columns:
            frame[BM25_COLUMN] = [
                dict(zip(v.indices(), v.values(), strict=True))
                for v in frame[BM25_COLUMN]
            ]
        return frame

    def search(
        self,
        query: str,
        vector: Sequence[float] | np.ndarray | None,
        k: int,
        *,
        mode: Mode = "hybrid",
        options: SearchOptions | None = None,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """The ``k`` best products for ``query``, best first, through the
        table's SQL function (``search_function.sql``), the one a SQL client
        calls too.

        ``dense``: nearest ``vector`` by cosine (HNSW); ``lexical``: BM25 of the
        analysed query, over the products holding any of its terms (empty when
        none does); ``hybrid``: both lanes fused, so a query without a lexical
        match still gets its dense results. ``vector`` (the query's unit
        embedding) may be None in lexical mode. ``filters`` (``{column: [values]
        or {"min": x, "max": y}}``) keep only matching products, inside both
        lanes; a filter the table cannot apply raises :class:`FilterError`.
        """
        options = options or SearchOptions()
        if mode not in MODES:
            raise UserError(f"mode must be one of {MODES}, got {mode!r}.")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"k must be a positive integer, got {k!r}.")
        array = None
        if mode != "lexical":
            if vector is None:
                raise UserError(f"{mode} search needs the query's vector.")
            array = np.asarray(vector, dtype=np.float32)
            # The model and the table do not match: the table cannot serve
            # this query, as when it is missing (the service answers 503).
            if array.shape != (self.dimension,):
                raise SearchError(
                    f"The query vector has shape {array.shape}; table "
                    f"{self.qualified_name} holds ({self.dimension},) vectors."
                )
        statement = sql.SQL(
            "SELECT * FROM {}(%s, CAST(%s AS text[]), %s, %s, %s, %s)"
        ).format(self._name(self.function_name))
        params = (
            array,
            analyze(query) if mode != "dense" else None,
            k,
            Jsonb(dict(filters or {})),
            mode,
            Jsonb(options.model_dump()),
        )
        try:
            with self.engine.begin() as conn:
                _, rows = _execute(conn, statement, params)
        except _DB_ERRORS as exc:
            original = getattr(exc, "orig", None) or exc
            if isinstance(original, _REFUSED_ARGUMENTS):
                raise FilterError(original.diag.message_primary) from exc
            raise _db_error(exc, f"Could not search {self.qualified_name}") from exc
        return [Hit(*row) for row in rows]
